"""Many Snakemake dry runs of one finished run in one process (Snakemake's Python API), for the rerun test.

    python tests/dry_runs.py WORKDIR CASES.json > RESULTS.json

CASES.json: {"snakefile", "configfiles": [...], "cases": {name: {"config": {...}, "cores": N}}}. Prints
{"rules": {rule: [rules that depend on it, directly or not]}, "cases": {name: {rule: jobs to run} or
{"error": message}}}. A dry run through the API costs a few tenths of a second; through the command line,
five seconds (Snakemake's start-up), which for a hundred settings would be minutes.
"""
import contextlib
import io
import json
import logging
import sys
from collections import Counter
from pathlib import Path


def dry_run(snakefile: Path, workdir: Path, configfiles: list[Path], config: dict, cores: int, forceall=False):
    """The jobs a dry run would run, and Snakemake's DAG (for the rule graph)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, ResourceSettings,
                                          StorageSettings)

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=cores),
                          config_settings=ConfigSettings(config=config, configfiles=configfiles),
                          storage_settings=StorageSettings(), snakefile=snakefile, workdir=workdir)
        wf.dag(DAGSettings(forceall=forceall)).execute_workflow(executor="dryrun")
        dag = wf._workflow.dag
        return Counter(j.rule.name for j in dag.needrun_jobs(exclude_finished=False)), dag


def rule_graph(dag) -> dict[str, set[str]]:
    """rule -> the rules whose jobs depend on one of its jobs, directly or not."""
    direct: dict[str, set[str]] = {}
    for job in dag.jobs:
        for dep in dag.dependencies[job]:
            direct.setdefault(dep.rule.name, set()).add(job.rule.name)
    closure = {}
    for rule in {j.rule.name for j in dag.jobs}:
        seen, todo = set(), [rule]
        while todo:
            for nxt in direct.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        closure[rule] = seen
    return closure


def main() -> int:
    workdir, spec = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    logging.disable(logging.WARNING)
    snakefile, files = Path(spec["snakefile"]), [Path(f) for f in spec["configfiles"]]
    out = {"cases": {}}
    with contextlib.redirect_stdout(io.StringIO()):  # the Snakefile's own prints (GPU lines) stay out of the JSON
        _, dag = dry_run(snakefile, workdir, files, {}, 2, forceall=True)
        out["rules"] = {r: sorted(d) for r, d in rule_graph(dag).items()}
        for name, case in spec["cases"].items():
            try:
                jobs, _ = dry_run(snakefile, workdir, files, case.get("config", {}), case.get("cores", 2))
                out["cases"][name] = dict(jobs)
            except Exception as e:  # noqa: BLE001 - reported per case, the test names it
                out["cases"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    json.dump(out, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
