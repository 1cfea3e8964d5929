"""A failed run lands in the dead-letter log (no data in it); replay_job asks for its replay, replay_sensor
launches it through the instance and clears the record once the replay succeeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.defs.resources import LocalStorage
from audience_assets_tests.world import copy_landing


def test_a_failed_run_is_dead_lettered_and_replayed(landing: Path, tmp_path: Path):
    data = copy_landing(landing, tmp_path / "data")
    acme = data / "landing" / "partners" / "acme_data"
    parked = tmp_path / "parked"
    shutil.move(acme, parked)  # the partner's delivery is missing: the run fails
    defs = build_definitions(Settings(data_dir=data, demo_data=False))
    storage = LocalStorage(data_dir=str(data))
    with dg.instance_for_test() as instance:
        failed = defs.resolve_job_def("partner_data_job").execute_in_process(
            partition_key="acme_data", instance=instance, raise_on_error=False
        )
        assert not failed.success
        run = instance.get_run_by_id(failed.run_id)
        failure = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE][0]
        sensor = defs.resolve_sensor_def("dead_letter_sensor")
        with dg.build_run_status_sensor_context(
            sensor_name="dead_letter_sensor",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=failure,
            resources={"storage": storage},
        ) as context:
            sensor(context.for_run_failure())
        entry = json.loads((data / layout.dead_letter_run(failed.run_id)).read_text())
        assert entry["assets"] == ["partner_data"] and entry["partition"] == "acme_data"
        assert entry["error_class"] == "ContractViolation" and set(entry) == {
            "run_id",
            "job",
            "partition",
            "assets",
            "failed_steps",
            "error_class",
            "failed_at",
        }

        shutil.move(parked, acme)  # the delivery arrives
        replay_sensor = defs.resolve_sensor_def("replay_sensor")

        def tick() -> list[dg.RunRequest]:
            with dg.build_sensor_context(
                instance=instance, definitions=defs, resources={"storage": storage}
            ) as context:
                return list(replay_sensor(context).run_requests or [])

        assert tick() == [], "nothing is replayed until someone asks"
        assert defs.resolve_job_def("replay_job").execute_in_process(instance=instance).success
        [request] = tick()
        assert request.asset_selection == [dg.AssetKey("partner_data")] and request.partition_key == "acme_data"
        assert request.tags["audience_assets/replay_of"] == failed.run_id and request.run_key.startswith(failed.run_id)
        # the daemon launches the request as a run; here it runs in process, with the same selection and tags
        replayed = dg.materialize(
            list(defs.assets),
            selection=request.asset_selection,
            partition_key="acme_data",
            resources=defs.resources,
            instance=instance,
            tags=request.tags,
        )
        assert replayed.success
        assert tick() == [] and list(storage.store().list(layout.DEAD_LETTER_RUNS)) == []


def test_the_alert_webhook_receives_the_dead_letter(tmp_path: Path, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/hook")
    data = tmp_path / "data"
    defs = build_definitions(Settings(data_dir=data, demo_data=False))
    with dg.instance_for_test() as instance:
        failed = defs.resolve_job_def("first_party_job").execute_in_process(instance=instance, raise_on_error=False)
        failure = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE][0]
        with dg.build_run_status_sensor_context(
            sensor_name="dead_letter_sensor",
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(failed.run_id),
            dagster_event=failure,
            resources={"storage": LocalStorage(data_dir=str(data))},
        ) as context:
            defs.resolve_sensor_def("dead_letter_sensor")(context.for_run_failure())
    server.shutdown()
    assert [r["run_id"] for r in received] == [failed.run_id]
    assert received[0]["assets"] == ["first_party_customers"] and received[0]["error_class"] == "ContractViolation"
