"""``powernode-agent puppet apply MODULE [PATH]``: a Puppet manifest a module ships, applied
with Debian's ``puppet`` (``puppet apply``), its report turned into fleet events.

The manifest is read from the module's verified image (PATH, default
``/etc/puppet/manifests/<module>.pp``; a path the module does not ship is
refused), not through the union, so a higher module cannot swap it. Puppet
runs in a private directory of its own (``--vardir``, ``--confdir``,
``--codedir``, ``--logdir``, ``--rundir``), with ``--detailed-exitcodes``
(0 no change, 2 changes, 4 failures, 6 both; anything else: it did not
apply), its log as JSON (``--logdest FILE.json``) and its report in
``--lastrunreport`` (``last_run_report.yaml``: Ruby-tagged YAML, read with
the tags ignored). What becomes events:

- ``puppet.applied`` (info; error when puppet failed): module, manifest,
  status (``changed``/``unchanged``/``failed``), exit code, noop, the
  report's resource counts and the failed resources;
- ``puppet.log`` per log line at warning or above (at most
  :data:`MAX_LOG_EVENTS`): level, message, source, file, line.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from powernode.agent.modules.integrity import verify_module
from powernode.agent.modules.layout import NodeLayout
from powernode.errors import ConfigError, DataError
from powernode.node.fields import JSON
from powernode.verity.composefs.reader import EntryType, Image

MAX_LOG_EVENTS = 100
MAX_MESSAGE = 4000
SEVERITY = {"warning": "warning", "err": "error", "alert": "critical", "emerg": "critical",
            "crit": "critical"}  # fmt: skip
DETAILED = {0: "unchanged", 2: "changed", 4: "failed", 6: "failed"}


@dataclass(frozen=True)
class PuppetRun:
    module: str
    manifest: str
    exit_code: int
    status: str
    events: list[tuple[str, str, dict[str, JSON]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("changed", "unchanged")


class _Loader(yaml.SafeLoader):
    """Safe YAML with Puppet's ``!ruby/object:…`` tags read as plain mappings."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_multi_constructor("!ruby/", _untagged)


def read_report(path: Path) -> dict[str, object]:
    """``last_run_report.yaml`` as plain data ({} when puppet wrote none)."""
    try:
        doc = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not a Puppet report: {e}") from e
    return doc if isinstance(doc, dict) else {}


def read_log(path: Path) -> list[dict[str, object]]:
    """Puppet's JSON log: an array of messages (closed only when puppet exits cleanly)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return []
    if text and not text.endswith("]"):
        text = text.rstrip(",") + "]"
    try:
        doc = json.loads(text or "[]")
    except ValueError as e:
        raise DataError(f"{path}: not Puppet's JSON log: {e}") from e
    return [m for m in doc if isinstance(m, dict)] if isinstance(doc, list) else []


def _resources(report: dict[str, object]) -> tuple[dict[str, JSON], list[str]]:
    counts: dict[str, JSON] = {}
    metrics = report.get("metrics")
    res = metrics.get("resources") if isinstance(metrics, dict) else None
    values = res.get("values") if isinstance(res, dict) else None
    for v in values if isinstance(values, list) else []:
        if isinstance(v, list) and len(v) == 3 and isinstance(v[2], int | float):
            counts[str(v[0])] = v[2]
    failed = []
    statuses = report.get("resource_statuses")
    for name, s in (statuses if isinstance(statuses, dict) else {}).items():
        if isinstance(s, dict) and s.get("failed"):
            failed.append(str(name))
    return counts, sorted(failed)


def manifest_text(layout: NodeLayout, module: str, path: str) -> bytes:
    """The manifest ``path`` as ``module``'s verified image ships it."""
    from powernode.agent.commit import read_entry  # noqa: PLC0415

    spec = layout.state_file.load().modules.get(module)
    if spec is None:
        raise ConfigError(f"module {module!r} is not attached")
    verified = verify_module(layout.store, module, spec.digest, seals=layout.seals(), deep=False)
    try:
        image = Image.from_bytes(verified.read(), source=str(verified.path))
    finally:
        verified.close()
    try:
        entry = image.lookup(path)
    except FileNotFoundError:
        raise ConfigError(f"module {module!r} ships no {path}") from None
    if entry.type is not EntryType.FILE:
        raise ConfigError(f"module {module!r}: {path} is not a regular file")
    return read_entry(image, entry, layout.store.objects_dir)


def apply(
    layout: NodeLayout,
    module: str,
    path: str | None = None,
    *,
    noop: bool = False,
    timeout: float = 1800,
    puppet: str = "puppet",
) -> PuppetRun:
    """Run ``puppet apply`` on the module's manifest; the run and its events."""
    where = path or f"/etc/puppet/manifests/{module}.pp"
    text = manifest_text(layout, module, where)
    with tempfile.TemporaryDirectory(prefix="powernode-puppet-") as tmp:
        d = Path(tmp)
        (d / "site.pp").write_bytes(text)
        argv = [puppet, "apply", "--detailed-exitcodes", "--color=false",
                *(f"--{k}={d / k}" for k in ("vardir", "confdir", "codedir", "logdir", "rundir")),
                f"--lastrunreport={d / 'report.yaml'}", "--logdest", str(d / "log.json"),
                *(["--noop"] if noop else []), str(d / "site.pp")]  # fmt: skip
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError as e:
            raise ConfigError(f"{puppet}: not installed (Debian package puppet)") from e
        except subprocess.TimeoutExpired as e:
            raise DataError(f"puppet apply {module} {where}: still running after {timeout}s") from e
        report, log = read_report(d / "report.yaml"), read_log(d / "log.json")
    status = DETAILED.get(proc.returncode, "failed")
    counts, failed = _resources(report)
    summary: dict[str, JSON] = {
        "module": module, "manifest": where, "status": status, "exit_code": proc.returncode,
        "noop": noop, "report_status": str(report.get("status", "")), "resources": counts,
        "failed_resources": list(failed),
    }  # fmt: skip
    if not log and proc.returncode not in DETAILED:
        summary["stderr"] = proc.stderr.decode(errors="replace")[-MAX_MESSAGE:]
    events: list[tuple[str, str, dict[str, JSON]]] = [
        ("puppet.applied", "info" if status != "failed" else "error", summary)
    ]
    for m in log:
        severity = SEVERITY.get(str(m.get("level", "")))
        if severity is None or len(events) > MAX_LOG_EVENTS:
            continue
        payload: dict[str, JSON] = {"module": module, "level": str(m.get("level"))}
        for k in ("message", "source", "file"):
            if m.get(k) is not None:
                payload[k] = str(m[k])[:MAX_MESSAGE]
        if str(m.get("file", "")).endswith("/site.pp"):
            payload["file"] = where  # the private copy's path: name the module's
        if isinstance(m.get("line"), int):
            payload["line"] = m["line"]  # type: ignore[assignment]
        events.append(("puppet.log", severity, payload))
    return PuppetRun(module, where, proc.returncode, status, events)
