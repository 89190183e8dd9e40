"""mmdebstrap's output → a named failure (build_failure): the missing package, the script.

The transcripts are dpkg's and apt's words as they print them (the chrony one
is the failure issue 12 reported, under the old ``custom`` base set).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.errors import SourceTreeError
from powernode.toolchain.build.failure import explain_failure, find_script_failure

APT_LINE = "E: run_chroot failed: E: apt-get --yes install " + " ".join(
    f"/var/cache/apt/archives/pkg{n}_1.0_amd64.deb" for n in range(120)
)

POSTINST = f"""\
I: installing remaining packages inside the chroot...
Unpacking chrony (4.3-2+deb12u1) ...
Setting up libc-bin (2.36-9+deb12u10) ...
Setting up chrony (4.3-2+deb12u1) ...
Creating config file /etc/chrony/chrony.conf with new version
/var/lib/dpkg/info/chrony.postinst: 38: chfn: not found
dpkg: error processing package chrony (--configure):
 installed chrony package post-installation script subprocess returned error exit status 127
Setting up redis-tools (5:7.0.15-1~deb12u1) ...
Errors were encountered while processing:
 chrony
E: Sub-process /usr/bin/dpkg returned an error code (1)
{APT_LINE} failed
E: mmdebstrap failed to run
"""

PREINST = """\
Selecting previously unselected package pn-broken.
Preparing to unpack .../pn-broken_1.0_all.deb ...
checking the host
dpkg: error processing archive /var/cache/apt/archives/pn-broken_1.0_all.deb (--unpack):
 new pn-broken package pre-installation script subprocess returned error exit status 3
Errors were encountered while processing:
 /var/cache/apt/archives/pn-broken_1.0_all.deb
"""

LONG = (
    "Setting up pn-broken:amd64 (1.0) ...\n"
    + "".join(f"line {n}\n" for n in range(1, 41))
    + "dpkg: error processing package pn-broken:amd64 (--configure):\n"
    + " installed pn-broken:amd64 package post-installation script subprocess was killed"
    " by signal (Terminated)\n"
)


@pytest.mark.parametrize(
    ("output", "package", "script", "how", "lines"),
    [
        pytest.param(
            POSTINST,
            "chrony",
            "postinst",
            "returned error exit status 127",
            ["Creating config file /etc/chrony/chrony.conf with new version",
             "/var/lib/dpkg/info/chrony.postinst: 38: chfn: not found"],
            id="postinst-chfn",
        ),
        pytest.param(
            PREINST, "pn-broken", "preinst", "returned error exit status 3",
            ["checking the host"], id="preinst-on-unpack",
        ),
        pytest.param(
            LONG, "pn-broken", "postinst", "was killed by signal (Terminated)",
            [f"line {n}" for n in range(21, 41)], id="arch-qualified-last-20-lines",
        ),
    ],
)  # fmt: skip
def test_failed_script_is_found_with_its_own_output(
    output: str, package: str, script: str, how: str, lines: list[str]
) -> None:
    failure = find_script_failure(output)
    assert failure is not None
    assert (failure.package, failure.script, failure.how) == (package, script, how)
    assert list(failure.output) == lines


def test_message_names_package_and_script_never_the_command_line() -> None:
    err = explain_failure(25, POSTINST, ["chrony"])
    msg = str(err)
    assert isinstance(err, SourceTreeError)
    assert "the postinst script of package chrony returned error exit status 127" in msg
    assert "  | /var/lib/dpkg/info/chrony.postinst: 38: chfn: not found" in msg
    assert "pkg0_1.0" not in msg and "apt-get --yes" not in msg
    assert len(msg) < 1000


def test_unknown_failure_shows_short_lines() -> None:
    msg = str(explain_failure(1, f"I: something\n{APT_LINE} failed\nE: gone\n", ["x"]))
    assert "mmdebstrap failed (1) installing x" in msg and "E: gone" in msg
    assert max(len(line) for line in msg.splitlines()) <= 210


def test_missing_package_wins_over_script_noise() -> None:
    out = "E: Unable to locate package no-such-pkg\n" + POSTINST
    msg = str(explain_failure(25, out, ["chrony", "no-such-pkg"]))
    assert "could not install package_spec no-such-pkg: no such package" in msg


@given(st.text(max_size=400))
def test_parser_never_crashes(text: str) -> None:
    failure = find_script_failure(text)
    if failure is not None:
        assert failure.script in {"preinst", "postinst", "prerm", "postrm"}
    assert str(explain_failure(1, text, ["p"]))
