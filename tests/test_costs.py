"""Stage costs from benchmark records, and their projection onto the full datasets."""
import math

import pytest

from pipeline import costs


def write_bench(path, s, rss="NA"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{s}\t0:00:01\t{rss}\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")


def test_benchmark_record_with_na_reads_as_nan(tmp_path):
    write_bench(tmp_path / "flow" / "a.tsv", 2.5)
    r = costs.read_benchmark(tmp_path / "flow" / "a.tsv")
    assert r["s"] == 2.5 and math.isnan(r["max_rss_mb"])


def test_fixed_cost_per_job_and_compute_per_minute_are_split():
    # two flow jobs: 1 and 3 minutes of video, each paying 4 s besides its compute of 10 s per minute
    recs = {"flow": [{"s": 14.0, "max_rss_mb": 500.0, "minutes": 1.0, "compute_s": 10.0, "device": "cpu"},
                     {"s": 34.0, "max_rss_mb": 700.0, "minutes": 3.0, "compute_s": 30.0, "device": "cpu"}]}
    row = costs.stage_rows(recs)["flow"]
    assert row["jobs"] == 2 and row["seconds"] == 48.0 and row["peak_rss_mb"] == 700.0
    assert row["fixed_s_per_job"] == pytest.approx(4.0)
    assert row["compute_s_per_video_minute"] == pytest.approx(10.0)
    assert row["s_per_video_minute"] == pytest.approx(12.0) and row["devices"] == ["cpu"]


def test_projection_scales_compute_not_the_fixed_cost():
    stages = {"features": {"fixed_s_per_job": 5.0, "compute_s_per_video_minute": 2.0, "s_per_video_minute": 9.0},
              "localize": {"mean_job_s": 6.0}}
    run = {"crop": 112, "test_videos": 3}
    target = {"crop": 224, "videos": 100, "minutes": 1000.0, "test_videos": 30, "experiments": 2,
              "iterations": 10, "train_step_s": 0.5}
    p = costs.project(stages, run, {"x": target})["x"]["seconds"]
    assert p["features"] == pytest.approx(5.0 * 100 + 2.0 * 4 * 1000)  # crop area x4 on compute only
    assert p["localize"] == pytest.approx(6.0 / 3 * 30 * 2)
    assert p["total"] == pytest.approx(p["features"] + p["localize"])


def test_flow_time_ratio_is_measured_and_grows_with_work():
    base = dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=1, warps=1, epsilon=0.01, inner_iterations=2,
                outer_iterations=1, scale_step=0.8, median_filtering=5)
    heavier = {**base, "warps": 3, "inner_iterations": 10}
    assert costs.flow_time_ratio(base, 48, base, 96) == pytest.approx(4.0)  # same settings: crop area
    assert costs.flow_time_ratio(base, 48, heavier, 48) > 2
