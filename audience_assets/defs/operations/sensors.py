"""Operations' sensors: every failed run recorded as a dead letter (and posted to ALERT_WEBHOOK_URL), and the
replay of dead letters that `replay_job` asked for, launched as runs through the instance."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import httpx

from audience_assets.core import layout
from audience_assets.core.settings import alert_webhook_url
from audience_assets.defs.resources import Storage


def _root_error_class(error) -> str:
    """The class of the error that caused a step failure, under Dagster's wrappers (no message: it may hold data)."""
    while error is not None and error.cls_name.startswith("Dagster") and error.cause is not None:
        error = error.cause
    return error.cls_name if error is not None else "unknown"


REPLAY_OF = "audience_assets/replay_of"


def build_dead_letter_sensor(assets_of_step: dict[str, list[str]]) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="dead_letter_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records every failed run (assets, partition, error class, run id; never data) "
        "in dead_letters/runs/ and posts it to ALERT_WEBHOOK_URL when set; "
        "replay_job re-runs them.",
    )
    def dead_letter_sensor(context: dg.RunFailureSensorContext, storage: Storage) -> None:
        run = context.dagster_run
        steps = context.get_step_failure_events()
        entry = {
            "run_id": run.run_id,
            "job": run.job_name,
            "partition": run.tags.get("dagster/partition"),
            "assets": sorted(k.to_user_string() for k in (run.asset_selection or []))
            or sorted({a for e in steps for a in assets_of_step.get(e.step_key, [e.step_key])}),
            "failed_steps": sorted({e.step_key for e in steps}),
            "error_class": _root_error_class(steps[0].event_specific_data.error) if steps else "RunFailure",
            "failed_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        store = storage.store()
        if REPLAY_OF in run.tags:  # a replay failed again: its own record supersedes the one it replayed
            store.delete(layout.dead_letter_run(run.tags[REPLAY_OF]))
        if "tenant" in run.tags:  # the failed steps had tagged their run: the record is that tenant's cost too
            store = store.tagged(tenant=run.tags["tenant"])
        store.put_bytes(layout.dead_letter_run(run.run_id), json.dumps(entry, indent=1).encode())
        url = alert_webhook_url()
        if url:
            try:
                httpx.post(url, json={"text": f"audience_assets run {run.run_id} failed", **entry}, timeout=10)
            except httpx.HTTPError as error:  # the dead letter is recorded; the alert is best effort
                context.log.warning(f"alert webhook failed: {type(error).__name__}")

    return dead_letter_sensor


def build_replay_sensor(job_of: dict[str, str], jobs: list) -> dg.SensorDefinition:
    """Launches one run per dead letter that replay_job marked (run key: run id @ request time, so each
    request runs once), for the assets the failed run had that still exist, through the replay job of their
    partitions (`job_of`: asset -> job); clears a record once its replay succeeded. Runs go through the
    instance like any sensor's, so pools, the run queue and the run launcher apply."""

    @dg.sensor(
        name="replay_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=jobs,
        description="Launches the replays replay_job asked for, and clears dead letters whose replay succeeded.",
    )
    def replay_sensor(context: dg.SensorEvaluationContext, storage: Storage) -> dg.SensorResult:
        store = storage.store()
        requests = []
        for obj in list(store.list(layout.DEAD_LETTER_RUNS)):
            entry = json.loads(store.get_bytes(obj.key) or b"{}")
            requested = entry.get("replay_requested_at")
            if not requested:
                continue
            replays = context.instance.get_runs(dg.RunsFilter(tags={REPLAY_OF: entry["run_id"]}), limit=1)
            if replays and replays[0].status == dg.DagsterRunStatus.SUCCESS:
                store.delete(obj.key)  # the replay completed what the failed run could not
                continue
            assets = [a for a in entry.get("assets", []) if a in job_of]
            for job in sorted({job_of[a] for a in assets}):
                requests.append(
                    dg.RunRequest(
                        run_key=f"{entry['run_id']}@{requested}/{job}",
                        job_name=job,
                        partition_key=entry.get("partition"),
                        asset_selection=[dg.AssetKey.from_user_string(a) for a in assets if job_of[a] == job],
                        tags={REPLAY_OF: entry["run_id"]},
                    )
                )
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "no replay requested")

    return replay_sensor
