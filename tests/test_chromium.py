"""`make test`'s browser step (tests/chromium.py): finds Chromium, installs Debian's package when root and missing,
and otherwise says what to do. The install branch runs a stand-in apt-get that puts an executable on the PATH."""
import os
import stat

from tests import chromium


def _exe(path, body="#!/bin/sh\nexit 0\n"):
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_refinery_chromium_is_used_and_recorded(tmp_path):
    browser, record = _exe(tmp_path / "my-chrome"), tmp_path / "venv" / "chromium"
    said = []
    env = {"REFINERY_CHROMIUM": str(browser), "PATH": str(tmp_path / "empty")}
    assert chromium.ensure(env, root=False, record=record, say=said.append) == 0
    assert record.read_text().strip() == str(browser) and chromium.find(env, record) == str(browser)


def test_missing_without_root_asks_clearly(tmp_path):
    said, record = [], tmp_path / "chromium"
    env = {"REFINERY_CHROMIUM": str(tmp_path / "nowhere"), "PATH": str(tmp_path)}
    assert chromium.ensure(env, root=False, record=record, say=said.append) == 1
    text = " ".join(said)
    assert "REFINERY_CHROMIUM=" + str(tmp_path / "nowhere") + " is not an executable" in text
    assert "apt-get install -y chromium" in text and "REFINERY_SKIP_BROWSER=1" in text and "needs root" in text
    assert not record.exists() and chromium.find(env, record) is None


def test_missing_as_root_installs_the_debian_package(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    # apt-get: log the call; `install` puts a chromium on the PATH as Debian's package does
    _exe(bin_dir / "apt-get", f'#!/bin/sh\necho "$@" >> {log}\n'
                              f'if [ "$1" = install ]; then printf "#!/bin/sh\\n" > {bin_dir}/chromium; '
                              f'chmod +x {bin_dir}/chromium; fi\n')
    said, record = [], tmp_path / "chromium-record"
    env = {"REFINERY_CHROMIUM": str(tmp_path / "nowhere"), "PATH": f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin"}
    assert chromium.ensure(env, root=True, record=record, say=said.append) == 0
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq chromium"]
    assert record.read_text().strip() == str(bin_dir / "chromium")
    assert chromium.find(env, record) == str(bin_dir / "chromium")        # the tests then use the installed one


def test_a_failed_install_is_reported(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir / "apt-get", "#!/bin/sh\nexit 100\n")
    said = []
    env = {"PATH": str(bin_dir)}
    assert chromium.ensure(env, root=True, record=tmp_path / "r", say=said.append) == 1
    assert "apt-get could not install it" in said[-1]
