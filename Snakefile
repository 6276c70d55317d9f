# Raw videos -> decoded snippets -> TV-L1 flow -> I3D features -> D2-Net -> detections -> mAP -> report.
#
#   snakemake --cores all                          # the demo preset
#   snakemake --cores all --config preset=thumos14
#   snakemake --cores all --config preset=folder videos=PATH [model=MODEL.pt]   # your own videos
#
# Every stage is a module under pipeline/ with a CLI, and every rule runs one the same way:
# `shell: "python -m pipeline.<stage> ARGUMENTS 2> {log:q}"`. Rules pass each stage's settings
# through `params:` so that changing a setting reruns that stage and what depends on it, nothing
# upstream. Arguments that grow with the dataset (a file per video) go in an argument file,
# `@<(printf '%s\n' ...)`, which the stage's parser reads: printf is a bash builtin, so no program
# is started with the list and the kernel's limits on arguments (128 KiB for one, about 2 MiB in
# all) never apply; ActivityNet 1.2's costs rule passes several MiB. An option whose value may be
# empty is written `--option={params.x:q}`: Snakemake's `:q` drops an empty string altogether.

import json
import os
import shlex
import sys

from snakemake.utils import min_version

from pipeline.core import annotation_io, demo_layout, gpu_slots
from pipeline.workflow import rules as wf

min_version("9.0")

configfile: "workflow_config.yaml"
# Declared defaults, this file, the preset, the command line (docs/configuration.md): one checked, typed config.
LAYERS = wf.config_layers(f"{workflow.basedir}/workflow_config.yaml", workflow.config_settings.configfiles,
                          workflow.config_settings.config)
wf.check_presets(LAYERS)
config.clear()
config.update(wf.resolve(LAYERS))
report: "pipeline/report_captions/workflow.rst"

# Jobs run `python -m pipeline.<stage>` with the interpreter running Snakemake, which has the project's
# packages: its folder goes first on PATH (a cluster job re-parses this file and does the same).
shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; ")
ANNOTATED = wf.annotated(config)  # the folder preset has no annotations: features (and predictions) only
MODEL_IN = config["model"]  # a trained model.pt to predict with
OUT = wf.results_dir(config)
wf.check_writable(OUT)
DEMO = wf.demo_settings(config)
wf.check_settings(config)  # cross-field constraints, before any job
# name -> (path, subset, duration) of every video this run processes; annotated videos without a file,
# and files no annotation claims (both found here, on the machine that plans the run)
VIDEOS, MISSING, UNANNOTATED = wf.videos(config)
# Decoded frames and flow (about 250 KB a frame at 224 px): deleted once a video's features exist, unless
# kept. Not kept, they live in SCRATCH when there is one: node-local storage, never the shared results
# folder (the `scratch` setting; by default the node's temp folder when a cluster profile groups the
# per-video stages into one job, as profiles/slurm does). There they are group-local (temp, group_jobs):
# Snakemake on the login node neither sees nor needs them.
SCRATCH = wf.scratch_dir(config, OUT, grouped=bool(workflow.group_settings.overwrite_groups.get("decode")))


def intermediate(name):
    """``decoded/{video}/frames.npy`` or ``flow/{video}/flow.npy``: kept under the results, or temporary."""
    if config["keep_intermediates"]:
        return f"{OUT}/{name}"
    return temp(f"{SCRATCH}/{name}", group_jobs=True) if SCRATCH else temp(f"{OUT}/{name}")


# Whether the intermediates fit: said at start-up; a real run (not a dry run, which writes nothing) stops
# before its first job when they cannot, not after hours.
DISK = wf.disk_estimate(SCRATCH or OUT, config, [v.duration_s for v in VIDEOS.values()],
                        running=workflow.global_resources["_cores"].value or 1)
if workflow.is_main_process:
    print(f"Disk: {DISK.text}" + ("" if DISK.fits else " (not enough for a real run)"), file=sys.stderr)


onstart:
    if workflow.is_main_process and workflow.local_exec:
        wf.check_disk(SCRATCH or OUT, DISK, config)

# How each stage runs (devices, batches, threads, chunk sizes, failure policy) is not what it computes:
# it reaches the jobs through the environment, never `params:`, so changing it reruns nothing
# (a cluster job re-parses this file and sets the same).
os.environ["VIDLOC_DECODE_RUNTIME"] = wf.as_runtime(wf.decode_runtime(config))
os.environ.update(VIDLOC_ON_BAD_VIDEO=config["on_bad_video"])
os.environ["VIDLOC_FLOW_RUNTIME"] = wf.as_runtime(wf.flow_runtime(config))
os.environ["VIDLOC_FEATURE_RUNTIME"] = wf.as_runtime(wf.feature_runtime(config))
os.environ["VIDLOC_TRAIN_RUNTIME"] = wf.as_runtime(wf.train_runtime(config))
envvars: "VIDLOC_DECODE_RUNTIME", "VIDLOC_ON_BAD_VIDEO", "VIDLOC_FLOW_RUNTIME", "VIDLOC_FEATURE_RUNTIME", "VIDLOC_TRAIN_RUNTIME"




wildcard_constraints:
    video="[^/]+",
    experiment="[A-Za-z0-9_.-]+",


EXPERIMENT_SET = wf.experiments(config)  # a mapping, or one of experiment_sets (--config experiments=table3)
# The `experiment` wildcard is a run: an experiment, with `.s<seed>` when train.seeds holds several.
EXPERIMENTS = wf.runs(config)  # in config order: the report's table rows

# Files that rules with thousands of inputs (skipped_videos, train, localize, report) read. Those
# rules name them as plain paths: a `rules.<name>.output` reference there costs Snakemake time
# quadratic in the input list (ActivityNet 1.2's DAG took a minute to build). Their per-video lists are
# functions (`lambda w: expand(...)`): Snakemake expands them only when the job is in the DAG, so a
# cluster job, which re-parses this file for its few per-video jobs, skips tens of thousands of paths.
TABLE_NAMES = ("annotations.tsv", "ambiguous.tsv", "videos.tsv", "classes.txt")  # what annotations.read_table reads
ANNOTATION_TABLE = [f"{OUT}/annotations/{name}" for name in TABLE_NAMES]
# The table checked against the decoded durations: what every later stage reads.
ANNOTATION_FILES = [f"{OUT}/annotations/decoded/{name}" for name in TABLE_NAMES]
PAST_END = f"{OUT}/annotations/decoded/past_end.tsv"
MISSING_VIDEOS = f"{OUT}/annotations/missing_videos.txt"
SKIPPED = f"{OUT}/skipped_videos.json"
INDEX = f"{OUT}/features/index.tsv"
PREDICTIONS = f"{OUT}/predict/detections.json"
MODEL = f"{OUT}/runs/{{experiment}}/model.pt"
COSTS = f"{OUT}/costs.json"


rule all:
    input:
        [f"{OUT}/report/report.html", f"{OUT}/report/viewer.html"] if ANNOTATED else [INDEX, SKIPPED],
        [PREDICTIONS, f"{OUT}/predict/viewer.html"] if MODEL_IN else [],


# The files the annotations are read from: the preset's, or those rule demo_data writes; what a
# bad row does (read by the annotations and durations stages).
if ANNOTATED:
    ANNOTATION_SOURCES = (annotation_io.source_files(wf.annotation_spec(config)) if DEMO is None
                          else [str(p) for p in demo_layout.annotation_files(DEMO, DEMO.root)])


# 0. The demo preset makes its own videos and THUMOS-format annotations.
if DEMO is not None:

    rule demo_data:
        output:
            videos=[v.path for v in VIDEOS.values()],
            annotations=ANNOTATION_SOURCES,
            manifest=f"{DEMO.root}/manifest.json",
        params:
            settings=wf.as_param(DEMO),
        log:
            f"{OUT}/logs/demo_data.log",
        shell:
            "python -m pipeline.demo_data $(dirname {output.manifest:q}) --settings {params.settings:q} 2> {log:q}"


# 1. Annotations of every format become one table, checked against the videos on disk.
if ANNOTATED:

    rule annotations:
        input:
            ANNOTATION_SOURCES,
        output:
            table=ANNOTATION_TABLE,
            missing=MISSING_VIDEOS,
            unannotated=f"{OUT}/annotations/unannotated_videos.txt",
            dropped=f"{OUT}/annotations/dropped.tsv",
        params:
            spec=json.dumps(wf.annotation_spec(config), sort_keys=True),
            # where the job sees the source files (a storage plugin may have staged them elsewhere)
            base=lambda w, input: wf.staged_root(input[0], ANNOTATION_SOURCES[0]),
            videos_dir=config["videos"],
            on_bad=config["on_bad_annotation"],
            found=json.dumps({"present": sorted(VIDEOS), "missing": MISSING, "unannotated": UNANNOTATED}),
            out=lambda w, output: os.path.dirname(output.table[0]),
        log:
            f"{OUT}/logs/annotations.log",
        shell:
            "python -m pipeline.annotations @<(printf '%s\\n' --spec {params.spec:q} --base {params.base:q}"
            " --videos-dir={params.videos_dir:q} --on-bad {params.on_bad:q} --found {params.found:q}"
            " --out {params.out:q}) 2> {log:q}"


# GPUs of this node: flow, features and train take one each when they will run on CUDA (`gpu`
# resource: devices x gpu.jobs_per_device unless --resources gpu=N; a CPU job takes none), and each
# such job binds to a free device (pipeline/core/gpu_slots.py, locks named by the physical GPU). Snakemake
# limits how many run, not which device each gets. A cluster job's GPUs come from the scheduler
# (CUDA_VISIBLE_DEVICES); the slots still keep the jobs of one group job apart.
GPUS = gpu_slots.device_ids()
FLOW_GPU, FEATURES_GPU, TRAIN_GPU = (int(bool(GPUS) and wf.uses_cuda(config, stage))
                                     for stage in ("flow", "features", "train"))
if GPUS and workflow.local_exec and workflow.is_main_process:
    if "gpu" not in workflow.global_resources:
        workflow.register_resource("gpu", len(GPUS) * config["gpu"]["jobs_per_device"])
    print(f"GPUs: {', '.join(GPUS)} ({config['gpu']['jobs_per_device']} job(s) per device); GPU jobs at once: "
          f"{wf.resource_value(workflow.global_resources['gpu'])}", file=sys.stderr)
os.environ[gpu_slots.ENV] = str(config["gpu"]["jobs_per_device"])
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA numbers the devices as nvidia-smi does
envvars: gpu_slots.ENV, "CUDA_DEVICE_ORDER"


# 2. Each video: frames at the preset fps, short side, center crop, in 16-frame snippets.
rule decode:
    input:
        lambda w: VIDEOS[w.video].path,
    output:
        frames=intermediate("decoded/{video}/frames.npy"),
        meta=f"{OUT}/decoded/{{video}}/meta.json",
    params:
        settings=wf.as_param(wf.decode_settings(config)),
    log:
        f"{OUT}/logs/decode/{{video}}.log",
    benchmark:
        f"{OUT}/benchmarks/decode/{{video}}.tsv"
    shell:
        "python -m pipeline.decode {input:q} --frames {output.frames:q} --meta {output.meta:q}"
        " --settings {params.settings:q} --runtime \"$VIDLOC_DECODE_RUNTIME\" --on-bad-video \"$VIDLOC_ON_BAD_VIDEO\""
        " --name {wildcards.video:q} 2> {log:q}"


# 3. Each video: TV-L1 flow between consecutive frames, quantized to uint8. Flow and features jobs
# start warm (pipeline/warm.py): forked from a per-node process that imported torch once.
rule flow:
    input:
        frames=rules.decode.output.frames,
        meta=rules.decode.output.meta,
    output:
        flow=intermediate("flow/{video}/flow.npy"),
        meta=f"{OUT}/flow/{{video}}/meta.json",
    params:
        settings=wf.as_param(wf.flow_settings(config)),
    resources:
        gpu=FLOW_GPU,
    threads: config["flow"]["threads"]
    # Above decode, below features: a decoded video moves on before another is decoded (bounded disk).
    priority: 1
    log:
        f"{OUT}/logs/flow/{{video}}.log",
    benchmark:
        f"{OUT}/benchmarks/flow/{{video}}.tsv"
    shell:
        "python -m pipeline.warm flow {input.frames:q} --decode-meta {input.meta:q} --flow {output.flow:q}"
        " --meta {output.meta:q} --settings {params.settings:q} --runtime \"$VIDLOC_FLOW_RUNTIME\" --threads {threads}"
        " 2> {log:q}"


# 4. Each video: I3D RGB and flow features, one 2048-d vector per snippet, with their provenance.
rule features:
    input:
        frames=rules.decode.output.frames,
        flow=rules.flow.output.flow,
        flow_meta=rules.flow.output.meta,
        weights=wf.weight_files(config),
    output:
        features=f"{OUT}/features/{{video}}.npy",
        provenance=f"{OUT}/features/{{video}}.json",
    params:
        settings=wf.as_param(wf.feature_settings(config)),
        preset=config["preset"],
    resources:
        gpu=FEATURES_GPU,
    threads: config["features"]["threads"]
    priority: 2  # finishing a video frees its decoded frames and flow
    log:
        f"{OUT}/logs/features/{{video}}.log",
    benchmark:
        f"{OUT}/benchmarks/features/{{video}}.tsv"
    shell:
        "python -m pipeline.warm features {input.frames:q} --flow {input.flow:q} --flow-meta {input.flow_meta:q}"
        " --out {output.features:q} --provenance {output.provenance:q} --settings {params.settings:q}"
        " --runtime \"$VIDLOC_FEATURE_RUNTIME\" --threads {threads} --preset {params.preset:q} 2> {log:q}"


# 4b. The table checked against each video's decoded duration (THUMOS14's txt files have none):
# segments past the end are kept as ground truth, dropped or stop the run, and listed.
if ANNOTATED:

    rule durations:
        input:
            table=ANNOTATION_TABLE,
            metas=lambda w: expand(f"{OUT}/decoded/{{video}}/meta.json", video=sorted(VIDEOS)),
        output:
            table=ANNOTATION_FILES,
            past_end=PAST_END,
        params:
            past_end=config["segments_past_end"],
            on_bad=config["on_bad_annotation"],
            annotations=lambda w, input: os.path.dirname(input.table[0]),
            out=lambda w, output: os.path.dirname(output.past_end),
        log:
            f"{OUT}/logs/durations.log",
        shell:
            "python -m pipeline.durations @<(printf '%s\\n' {input.metas:q}) --annotations {params.annotations:q}"
            " --past-end {params.past_end:q} --on-bad {params.on_bad:q} --out {params.out:q} 2> {log:q}"


# 5. Videos the run could not use, for later stages and the report.
rule skipped_videos:
    input:
        metas=lambda w: expand(f"{OUT}/decoded/{{video}}/meta.json", video=sorted(VIDEOS)),
        missing=MISSING_VIDEOS if ANNOTATED else [],
    output:
        SKIPPED,
    params:
        missing=lambda w, input: ["--missing", input.missing] if ANNOTATED else [],
    log:
        f"{OUT}/logs/skipped_videos.log",
    shell:
        "python -m pipeline.skipped @<(printf '%s\\n' {input.metas:q}) {params.missing:q} --out {output:q}"
        " 2> {log:q}"


# 5b. What features/ holds, one row per video (fps, snippets, duration, why skipped): the folder
# preset's result, and what the exports read.
rule feature_index:
    input:
        provenance=lambda w: expand(f"{OUT}/features/{{video}}.json", video=sorted(VIDEOS)),
    output:
        INDEX,
    log:
        f"{OUT}/logs/feature_index.log",
    shell:
        "python -m pipeline.feature_index @<(printf '%s\\n' {input.provenance:q}) --out {output:q} 2> {log:q}"


# 5c. With model=PATH: a trained D2-Net's detections for every video of the run.
if MODEL_IN:

    rule predict:
        input:
            model=MODEL_IN,
            features=lambda w: expand(f"{OUT}/features/{{video}}.npy", video=sorted(VIDEOS)),
            provenance=lambda w: expand(f"{OUT}/features/{{video}}.json", video=sorted(VIDEOS)),
        output:
            detections=PREDICTIONS,
            csv=f"{OUT}/predict/detections.csv",
            page=f"{OUT}/predict/index.html",
            viewer=f"{OUT}/predict/viewer.html",
            timelines=directory(f"{OUT}/predict/timelines"),
        params:
            signature=lambda w: json.dumps(wf.feature_signature(config), sort_keys=True),
            localize=wf.as_param(wf.localize_settings(config)),
            sources=json.dumps({v: info.path for v, info in VIDEOS.items()}),
            out=lambda w, output: os.path.dirname(output.detections),
        log:
            f"{OUT}/logs/predict.log",
        shell:
            "python -m pipeline.predict @<(printf '%s\\n' {input.features:q} --sources {params.sources:q})"
            " --model {input.model:q} --signature {params.signature:q} --localize {params.localize:q}"
            " --out {params.out:q} 2> {log:q}"


# The rest needs annotations: it trains, localizes, evaluates and reports.
TRAIN_VIDEOS = sorted(v for v, info in VIDEOS.items() if info.subset == config["train_subset"])
TEST_VIDEOS = sorted(v for v, info in VIDEOS.items() if info.subset == config["test_subset"])

if ANNOTATED:

    # 6. Each experiment: D2-Net trained on the training subset's features (video-level labels only).
    # Its params hold training settings only: localization and evaluation settings never retrain,
    # but for an experiment that selects its weights on the test set (select_on_test, the reference code's).
    rule train:
        input:
            features=lambda w: expand(f"{OUT}/features/{{video}}.npy", video=TRAIN_VIDEOS),
            annotations=ANNOTATION_FILES,
            skipped=SKIPPED,
            # the model's outputs on the test subset are saved as it trains (train.eval_every)
            test_features=lambda w: expand(f"{OUT}/features/{{video}}.npy", video=TEST_VIDEOS),
            test_metas=lambda w: expand(f"{OUT}/decoded/{{video}}/meta.json", video=TEST_VIDEOS),
        output:
            model=MODEL,
            log=f"{OUT}/runs/{{experiment}}/log.csv",
            plot=f"{OUT}/runs/{{experiment}}/loss.png",
            test_outputs=directory(f"{OUT}/runs/{{experiment}}/test_outputs"),
        params:
            settings=lambda w: wf.as_param(wf.train_settings(config, w.experiment)),
            subset=config["train_subset"],
            # The stages read these folders: the ones the declared files are in, wherever a storage
            # plugin put them (with --shared-fs-usage none, not where this file names them).
            features=lambda w, input: os.path.dirname(input.features[0]),
            annotations=lambda w, input: os.path.dirname(input.annotations[0]),
            out=lambda w, output: os.path.dirname(output.model),
            # recorded in model.pt, so predict can apply the model to other videos' features made the same way
            signature=lambda w: json.dumps(wf.feature_signature(config), sort_keys=True),
            test=lambda w, input: [
                "--test-features", os.path.dirname(input.test_features[0]), "--test-subset", config["test_subset"],
                "--test-decoded", os.path.dirname(os.path.dirname(input.test_metas[0]))],
            selection=lambda w: wf.selection_args(config, w.experiment),
        resources:
            gpu=TRAIN_GPU,
        threads: config["train"]["threads"]
        log:
            f"{OUT}/logs/train/{{experiment}}.log",
        benchmark:
            f"{OUT}/benchmarks/train/{{experiment}}.tsv"
        shell:
            "python -m pipeline.train --features {params.features:q} --annotations {params.annotations:q}"
            " --skipped {input.skipped:q} --subset {params.subset:q} --settings {params.settings:q}"
            " --runtime \"$VIDLOC_TRAIN_RUNTIME\" --feature-signature {params.signature:q} {params.test:q}"
            " {params.selection:q} --out {params.out:q} --threads {threads} 2> {log:q}"


    # 6b. Each experiment: the learning curve, its saved test outputs localized and evaluated with the
    # run's settings (pipeline/learning_curve.py), as localize and evaluate would.
    rule curve:
        input:
            model=MODEL,
            test_outputs=rules.train.output.test_outputs,
            metas=lambda w: expand(f"{OUT}/decoded/{{video}}/meta.json", video=TEST_VIDEOS),
            annotations=ANNOTATION_FILES,
        output:
            f"{OUT}/runs/{{experiment}}/curve.csv",
        params:
            localize=lambda w: wf.as_param(wf.localize_settings(config, w.experiment)),
            evaluation=lambda w: wf.as_param(wf.evaluation_settings(config, w.experiment)),
            subset=config["test_subset"],
            decoded=lambda w, input: os.path.dirname(os.path.dirname(input.metas[0])),
            annotations=lambda w, input: os.path.dirname(input.annotations[0]),
        log:
            f"{OUT}/logs/curve/{{experiment}}.log",
        shell:
            "python -m pipeline.learning_curve --outputs {input.test_outputs:q} --model {input.model:q}"
            " --decoded {params.decoded:q} --annotations {params.annotations:q} --subset {params.subset:q}"
            " --localize {params.localize:q} --evaluation {params.evaluation:q} --out {output:q} 2> {log:q}"


    # 7. Each experiment: the test videos' TCAMs become scored segments (ActivityNet results format).
    rule localize:
        input:
            model=MODEL,
            features=lambda w: expand(f"{OUT}/features/{{video}}.npy", video=TEST_VIDEOS),
            metas=lambda w: expand(f"{OUT}/decoded/{{video}}/meta.json", video=TEST_VIDEOS),
            annotations=ANNOTATION_FILES,
            skipped=SKIPPED,
        output:
            detections=f"{OUT}/runs/{{experiment}}/detections.json",
            scores=f"{OUT}/runs/{{experiment}}/scores.npz",
        params:
            settings=lambda w: wf.as_param(wf.localize_settings(config, w.experiment)),
            subset=config["test_subset"],
            features=lambda w, input: os.path.dirname(input.features[0]),
            decoded=lambda w, input: os.path.dirname(os.path.dirname(input.metas[0])),
            annotations=lambda w, input: os.path.dirname(input.annotations[0]),
        threads: config["train"]["threads"]
        log:
            f"{OUT}/logs/localize/{{experiment}}.log",
        benchmark:
            f"{OUT}/benchmarks/localize/{{experiment}}.tsv"
        shell:
            "python -m pipeline.localize --model {input.model:q} --features {params.features:q}"
            " --decoded {params.decoded:q} --annotations {params.annotations:q} --subset {params.subset:q}"
            " --skipped {input.skipped:q} --settings {params.settings:q} --detections {output.detections:q}"
            " --scores {output.scores:q} --threads {threads} 2> {log:q}"


    # 8. Each experiment: detection mAP per tIoU, F1, classification mAP.
    rule evaluate:
        input:
            detections=rules.localize.output.detections,
            scores=rules.localize.output.scores,
            annotations=ANNOTATION_FILES,
        output:
            f"{OUT}/runs/{{experiment}}/metrics.json",
        params:
            subset=config["test_subset"],
            train_subset=config["train_subset"],
            tiou=lambda w: ",".join(f"{t:g}" for t in wf.evaluation_settings(config, w.experiment).tiou_thresholds),
            protocol=lambda w: wf.evaluation_settings(config, w.experiment).protocol,
            annotations=lambda w, input: os.path.dirname(input.annotations[0]),
        log:
            f"{OUT}/logs/evaluate/{{experiment}}.log",
        shell:
            "python -m pipeline.evaluate {input.detections:q} --annotations {params.annotations:q}"
            " --subset {params.subset:q} --train-subset {params.train_subset:q}"
            " --tiou {params.tiou} --protocol {params.protocol}"
            " --scores {input.scores:q} --out {output:q} 2> {log:q}"


    # 9. What each stage cost (Snakemake benchmark records), projected onto the full datasets.
    rule costs:
        input:
            decode=lambda w: expand(f"{OUT}/benchmarks/decode/{{video}}.tsv", video=sorted(VIDEOS)),
            flow=lambda w: expand(f"{OUT}/benchmarks/flow/{{video}}.tsv", video=sorted(VIDEOS)),
            features=lambda w: expand(f"{OUT}/benchmarks/features/{{video}}.tsv", video=sorted(VIDEOS)),
            train=expand(f"{OUT}/benchmarks/train/{{experiment}}.tsv", experiment=EXPERIMENTS),
            localize=expand(f"{OUT}/benchmarks/localize/{{experiment}}.tsv", experiment=EXPERIMENTS),
            decode_metas=lambda w: expand(f"{OUT}/decoded/{{video}}/meta.json", video=sorted(VIDEOS)),
            flow_metas=lambda w: expand(f"{OUT}/flow/{{video}}/meta.json", video=sorted(VIDEOS)),
            provenance=lambda w: expand(f"{OUT}/features/{{video}}.json", video=sorted(VIDEOS)),
        output:
            COSTS,
        params:
            settings=json.dumps(wf.cost_settings(config, EXPERIMENTS, LAYERS), sort_keys=True),
            test_videos=",".join(TEST_VIDEOS),
        log:
            f"{OUT}/logs/costs.log",
        shell:
            "python -m pipeline.costs @<(printf '%s\\n' {input.decode:q} {input.flow:q} {input.features:q}"
            " {input.train:q} {input.localize:q} --decode-metas {input.decode_metas:q}"
            " --flow-metas {input.flow_metas:q} --provenance {input.provenance:q} --test-videos={params.test_videos:q})"
            " --settings {params.settings:q} --out {output:q} 2> {log:q}"


    # 10. One report comparing the experiments (the paper's Table 3 shape), with its plots.
    rule report:
        input:
            metrics=expand(f"{OUT}/runs/{{experiment}}/metrics.json", experiment=EXPERIMENTS),
            detections=expand(f"{OUT}/runs/{{experiment}}/detections.json", experiment=EXPERIMENTS),
            losses=expand(f"{OUT}/runs/{{experiment}}/loss.png", experiment=EXPERIMENTS),
            curves=expand(f"{OUT}/runs/{{experiment}}/curve.csv", experiment=EXPERIMENTS),
            scores=expand(f"{OUT}/runs/{{experiment}}/scores.npz", experiment=EXPERIMENTS),
            provenance=lambda w: expand(f"{OUT}/features/{{video}}.json", video=sorted(VIDEOS)),
            skipped=SKIPPED,
            annotations=ANNOTATION_FILES,
            past_end=PAST_END,
            costs=COSTS,
        output:
            html=report(f"{OUT}/report/report.html", caption="pipeline/report_captions/report.rst",
                        category="Report"),
            md=f"{OUT}/report/report.md",
            ap=report(f"{OUT}/report/ap_per_class.png", caption="pipeline/report_captions/ap_per_class.rst",
                      category="Plots"),
            pr=report(f"{OUT}/report/pr_curve.png", caption="pipeline/report_captions/pr_curve.rst", category="Plots"),
            timelines=report(f"{OUT}/report/timelines.png", caption="pipeline/report_captions/timelines.rst",
                             category="Plots"),
            curves=report(f"{OUT}/report/learning_curves.png",
                          caption="pipeline/report_captions/learning_curves.rst", category="Plots"),
            viewer=f"{OUT}/report/viewer.html",
        params:
            # what the report shows: plain values, so a change reruns it (Snakemake compares params that
            # are not functions of the input or output)
            shown=["--preset", config["preset"], "--experiments", ",".join(EXPERIMENTS),
                   "--labels", json.dumps(EXPERIMENT_SET.labels), f"--caption={EXPERIMENT_SET.caption}",
                   "--groups", json.dumps({r: wf.run_parts(config, r)[0] for r in EXPERIMENTS}),
                   "--subset", config["test_subset"], "--timelines", config["report"]["videos"],
                   "--sources", json.dumps({v: VIDEOS[v].path for v in TEST_VIDEOS})],
            args=lambda w, input, output: [
                "--runs", os.path.dirname(os.path.dirname(input.metrics[0])),
                "--annotations", os.path.dirname(input.annotations[0]), "--skipped", input.skipped,
                "--costs", input.costs, "--out", os.path.dirname(output.html)],
        log:
            f"{OUT}/logs/report.log",
        shell:
            "python -m pipeline.report @<(printf '%s\\n' {params.shown:q} {params.args:q} {input.provenance:q})"
            " 2> {log:q}"


    # 11. `snakemake --cores all export` (not part of `all`): the features and annotations in the layouts
    # W-TALC/3C-Net/D2-Net and ActionFormer/OpenTAD read as they are.
    rule export:
        input:
            features=lambda w: expand(f"{OUT}/features/{{video}}.npy", video=sorted(VIDEOS)),
            index=INDEX,
            annotations=ANNOTATION_FILES,
        output:
            wtalc=directory(f"{OUT}/export/wtalc"),
            actionformer=directory(f"{OUT}/export/actionformer"),
        params:
            args=lambda w, input, output: [
                "--preset", config["preset"], "--subsets", f"{config['train_subset']},{config['test_subset']}",
                "--annotations", os.path.dirname(input.annotations[0]), "--index", input.index,
                "--out", os.path.dirname(output.wtalc)],
        log:
            f"{OUT}/logs/export.log",
        shell:
            "python -m pipeline.export @<(printf '%s\\n' {params.args:q} {input.features:q}) 2> {log:q}"
