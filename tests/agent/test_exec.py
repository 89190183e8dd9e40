"""``exec``: NodeScripts verified, run confined, bounded, timed out — real processes.

The platform round trip (register, enqueue, the agent's task, the outcome) is
tests/agent/test_exec_e2e.py; this file is the runner on its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from powernode.agent.confine import detect
from powernode.agent.nodescripts import load_keys, run_script, verdict
from powernode.agent.tasks import TaskError
from powernode.errors import ConfigError, DataError
from powernode.signing import generate_private_key, public_key_pem
from powernode.signing.keys import load_public_key
from powernode.signing.nodescript import NodeScript, parse

KEY = generate_private_key()
PUB = load_public_key(public_key_pem(KEY))


def script(body: str, **kw: object) -> NodeScript:
    return parse({"name": "t", "version": 1, "script": body, **kw}).signed(KEY)


def test_a_signed_script_runs_and_its_exit_code_is_the_outcome() -> None:
    result = run_script(script("echo hello; echo oops >&2; exit 0"), [PUB])
    assert result["exit_code"] == 0 and result["stdout"] == "hello\n"
    assert result["stderr"] == "oops\n" and not result["timed_out"]
    assert result["confinement"] == detect()
    assert result["signed_by"] and verdict(result) is result
    failed = run_script(script("echo bad >&2; exit 3"), [PUB])
    assert failed["exit_code"] == 3
    with pytest.raises(TaskError, match=r"exited 3 .*stderr: 'bad\\n'") as e:
        verdict(failed)
    assert not e.value.retryable


def test_output_is_bounded_and_counted() -> None:
    body = "head -c 200000 /dev/zero | tr '\\0' x"
    result = run_script(script(body, limits={"output_bytes": 1000}), [PUB])
    assert len(result["stdout"]) == 1000 and result["stdout_bytes"] == 200000
    assert result["stdout_truncated"] and not result["stderr_truncated"]


def test_a_script_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    body = f"sleep 60 & echo $! > {marker}; sleep 60"
    result = run_script(script(body, timeout_seconds=1), [PUB])
    assert result["timed_out"] and result["exit_code"] != 0
    with pytest.raises(TaskError, match="killed after its timeout of 1 s"):
        verdict(result)
    child = int(marker.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


@pytest.mark.parametrize("how", ["unsigned", "other key", "body altered", "limits loosened"])
def test_a_script_not_signed_by_a_trusted_key_is_refused_and_never_runs(
    how: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    good = script(f"touch {marker}")
    bad = {
        "unsigned": dataclasses.replace(good, signature="", key_fingerprint=""),
        "other key": parse(good.to_dict() | {"signature": ""}).signed(generate_private_key()),
        "body altered": dataclasses.replace(good, script=f"touch {marker}; echo evil"),
        "limits loosened": dataclasses.replace(
            good, limits={**good.limits, "memory_bytes": 1 << 40}
        ),
    }[how]
    with pytest.raises(DataError, match="refusing to run it"):
        run_script(bad, [PUB])
    assert not marker.exists()


def test_no_keys_refuses_everything(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no NodeScript keys are trusted"):
        run_script(script("true"), load_keys(None))
    empty = tmp_path / "keys.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ConfigError, match="no PUBLIC KEY PEM"):
        load_keys(empty)
    both = tmp_path / "both.pem"
    both.write_bytes(public_key_pem(generate_private_key()) + public_key_pem(KEY))
    assert run_script(script("true"), load_keys(both))["exit_code"] == 0


def test_the_child_runs_with_no_new_privileges_and_its_limits() -> None:
    body = "grep NoNewPrivs /proc/self/status; ulimit -c; ulimit -v"
    result = run_script(script(body, limits={"memory_bytes": 512 << 20}), [PUB])
    lines = result["stdout"].split("\n")
    assert lines[0].split() == ["NoNewPrivs:", "1"]
    assert lines[1] == "0"  # no core dumps
    if result["confinement"] == "rlimit":
        assert lines[2] == str((512 << 20) // 1024)
        assert "RLIMIT_NPROC" in result["confinement_note"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "Bad Name", "version": 1, "script": "true"}, "name:"),
        ({"name": "x", "version": 0, "script": "true"}, "version:"),
        ({"name": "x", "version": 1, "script": ""}, "script:"),
        ({"name": "x", "version": 1, "script": "true", "interpreter": "sh"}, "interpreter:"),
        ({"name": "x", "version": 1, "script": "true", "limits": {"cpus": 1}}, "limits:"),
        ({"name": "x", "version": 1, "script": "true", "timeout_seconds": 0}, "timeout_seconds:"),
        ({"name": "x", "version": 1, "script": "true", "extra": 1}, "unknown field"),
    ],
)
def test_bad_documents_name_the_field(doc: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse(doc)
