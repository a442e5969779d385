"""The Python client against a real host: stdio and TLS transports, tasks and
their logs, a permission request answered, pairing with the Rust host."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from conftest import wait_until
from openwork_client import Client, FingerprintMismatch, RpcError, models as m
from openwork_client.pairing import PairingError, pair


def run_to_end(client: Client, **params):
    run = client.task_run(**params)
    assert isinstance(run, m.TaskRunResult)
    events = list(client.follow(run.task_id, timeout=30))
    return run, events


def test_stdio_runs_a_task_and_streams_its_output_in_order(host):
    with Client.stdio(data_dir=host.data, binary=host.binary) as client:
        assert client.server is not None and "task.run" in client.server.capabilities.methods
        run, events = run_to_end(client, command="echo hello; echo oops >&2; exit 4", title="py test")
        chunks = [e for e in events if isinstance(e, m.LogChunk)]
        assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
        assert "".join(c.data for c in chunks if c.stream == "stdout") == "hello\n"
        assert "".join(c.data for c in chunks if c.stream == "stderr") == "oops\n"
        final = events[-1]
        assert isinstance(final, m.TaskUpdate) and final.status == "failed" and final.exit_code == 4
        logs = client.task_logs(task_id=run.task_id)
        assert logs.done and [c.to_json() for c in logs.chunks] == [c.to_json() for c in chunks]
        record = client.task_get(task_id=run.task_id)
        assert record.title == "py test" and record.exit_code == 4 and record.last_seq == len(chunks)
        assert client.task_list(limit=1).tasks[0].task_id == run.task_id
        with pytest.raises(RpcError) as err:
            client.task_get(task_id="t_missing")
        assert err.value.code == -32003 and err.value.action


def test_a_permission_request_is_answered_and_the_task_goes_on(host):
    target = host.work / "doomed" / "inner"
    target.mkdir(parents=True)
    with Client.unix(host.socket) as client:
        run = client.task_run(command="rm -r doomed && echo gone", cwd=str(host.work))
        seen = []
        for event in client.follow(run.task_id, timeout=30):
            seen.append(event)
            if isinstance(event, m.PermissionRequest):
                assert "once" in event.options and "rm -r doomed" in event.detail
                reply = client.permission_reply(request_id=event.request_id, decision="once")
                assert reply.decision == "once"
        assert any(isinstance(e, m.TaskUpdate) and e.status == "waiting_permission" for e in seen)
        assert seen[-1].status == "succeeded"
        assert "gone" in "".join(e.data for e in seen if isinstance(e, m.LogChunk))
        assert not target.exists()


def test_pairing_from_python_then_tls_with_the_pinned_certificate(host):
    window = json.loads(host.cli("pair", "--detach", "--json", "--replace", "--address", "127.0.0.1"))
    approver = threading.Thread(target=host.approve, args=("py-device",))
    approver.start()
    try:
        paired = pair(host.address, window["code"], "py-device", approval_timeout=20)
    finally:
        approver.join(timeout=30)
    assert paired.fingerprint == host.fingerprint
    assert "tasks.run" in paired.scopes and "admin" not in paired.scopes
    with Client.tls(paired.address, paired.fingerprint, paired.device_id, paired.token) as client:
        assert [s.scope for s in client.server.scopes] == paired.scopes
        run, events = run_to_end(client, argv=["printf", "over tls"])
        assert "".join(e.data for e in events if isinstance(e, m.LogChunk)) == "over tls"
        assert events[-1].status == "succeeded"
        with pytest.raises(RpcError) as err:
            client.devices_list()
        assert err.value.code == -32002
    with pytest.raises(FingerprintMismatch):
        Client.tls(paired.address, "00" * 32, paired.device_id, paired.token)
    with pytest.raises(RpcError) as err:
        Client.tls(paired.address, paired.fingerprint, paired.device_id, "not-the-token")
    assert err.value.code == -32001


def test_a_wrong_code_fails_key_confirmation(host):
    window = json.loads(host.cli("pair", "--detach", "--json", "--replace", "--address", "127.0.0.1"))
    wrong = "11111111" if window["code"] == "00000000" else "00000000"
    with pytest.raises(PairingError, match="could not prove it knows the code"):
        pair(host.address, wrong, "intruder", approval_timeout=5)
    assert json.loads(host.cli("devices", "pending", "--json"))["pending"] == []


def test_a_host_paired_by_the_cli_is_found_in_hosts_toml(host, tmp_path):
    window = json.loads(host.cli("pair", "--detach", "--json", "--replace", "--address", "127.0.0.1"))
    pairing = subprocess.Popen(
        [host.binary, "client", "--client-dir", str(tmp_path), "pair", host.address,
         "--code", window["code"], "--name", "cli-device", "--wait", "20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    host.approve("cli-device")
    assert pairing.wait(timeout=30) == 0, pairing.stderr.read() if pairing.stderr else ""
    with Client.known(client_dir=tmp_path) as client:
        assert client.ping() == m.Empty()
        assert isinstance(client.health_get(), m.HealthReport)


def test_models_round_trip_and_ignore_members_they_do_not_know():
    wire = {"taskId": "t_1", "seq": 3, "stream": "stderr", "data": "x", "ts": "2024-01-01T00:00:00Z", "future": 1}
    chunk = m.LogChunk.from_json(wire)
    assert chunk.task_id == "t_1" and chunk.data_base64 is None
    del wire["future"]
    assert chunk.to_json() == wire
    params = m.TaskRunParams(argv=["ls"], env={"A": "1"}, timeout_s=5)
    assert params.to_json() == {"argv": ["ls"], "env": {"A": "1"}, "timeoutS": 5}
    report = m.PermissionAuditResult.from_json({"entries": [{"entryId": 1, "at": "t", "taskId": "t_1", "event": "denied", "summary": "s"}]})
    assert report.entries[0].entry_id == 1
