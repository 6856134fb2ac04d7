"""download.fetch() against archives served from this machine."""

import functools
import hashlib
import http.server
import io
import os
import pathlib
import re
import signal
import stat
import tarfile
import threading

import pytest

import cifar10_input
from harness import fake_cifar
from harness.procs import PATIENCE_SECS, Process, free_ports
from helpers import run_here, train_flags
from support import download

ARCHIVE = "cifar-10-binary.tar.gz"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A fake archive in the official layout: (path, md5, extracted folder)."""
    root = tmp_path_factory.mktemp("archive")
    path, md5 = fake_cifar.write_archive(
        str(root / "src"), str(root / ARCHIVE), records_per_file=20, test_records=20
    )
    return path, md5, str(root / "src" / fake_cifar.FOLDER)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; counts requests. '/short/<file>' sends half of a file
    under a Content-Length of the whole, then hangs up; '/stall/<file>' sends
    half, then waits until the test ends."""

    requests = []
    test_ended = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Handler.requests.append(self.path)
        kind, _, name = self.path[1:].partition("/")
        if kind not in ("short", "stall"):
            super().do_GET()
            return
        data = pathlib.Path(self.directory, name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if kind == "stall":
            _Handler.test_ended.wait(PATIENCE_SECS)
        self.close_connection = True


@pytest.fixture
def server(archive):
    """An HTTP server on 127.0.0.1 serving the archive's folder."""
    _Handler.requests = []
    _Handler.test_ended.clear()
    handler = functools.partial(_Handler, directory=os.path.dirname(archive[0]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    _Handler.test_ended.set()
    httpd.shutdown()
    httpd.server_close()


def _download(data_dir, url, md5):
    download.fetch(
        url, md5, str(data_dir), cifar10_input.DATA_FOLDER,
        sizes={cifar10_input.DATA_MD5: cifar10_input.ARCHIVE_BYTES},
    )  # fmt: skip


def _assert_extracted(data_dir, source_folder):
    folder = os.path.join(str(data_dir), fake_cifar.FOLDER)
    for name in cifar10_input.TRAIN_FILES + cifar10_input.TEST_FILES:
        got = pathlib.Path(folder, name).read_bytes()
        assert got == pathlib.Path(source_folder, name).read_bytes()


def _leftovers(data_dir):
    """Temporary files or folders left in data_dir."""
    kept = (ARCHIVE, fake_cifar.FOLDER)
    return [n for n in os.listdir(data_dir) if n not in kept]


def test_download_over_http_checks_md5_and_extracts(archive, server, tmp_path, capsys):
    path, md5, source = archive
    _download(tmp_path, server + "/" + ARCHIVE, md5)
    _assert_extracted(tmp_path, source)
    assert (tmp_path / ARCHIVE).read_bytes() == pathlib.Path(path).read_bytes()
    assert _leftovers(tmp_path) == []
    # The progress line shows percent and size, never past 100%.
    out = capsys.readouterr().out
    percents = [float(p) for p in re.findall(r"([\d.]+)% \(", out)]
    assert percents and max(percents) == 100.0
    assert "MB)" in out


def test_download_from_file_url(archive, tmp_path):
    path, md5, source = archive
    _download(tmp_path, "file://" + path, md5)
    _assert_extracted(tmp_path, source)


def test_extracted_folder_present_means_no_download(archive, server, tmp_path):
    path, md5, source = archive
    _download(tmp_path, server + "/" + ARCHIVE, md5)
    _Handler.requests = []
    _download(tmp_path, server + "/" + ARCHIVE, "0" * 32)  # would fail if checked
    assert _Handler.requests == []


def test_wrong_checksum_is_rejected_and_nothing_kept(archive, server, tmp_path):
    with pytest.raises(download.FetchError) as e:
        _download(tmp_path, server + "/" + ARCHIVE, "0" * 32)
    assert "MD5" in str(e.value) and "--data_md5" in str(e.value)
    assert os.listdir(tmp_path) == []  # nothing kept, not even the lock


@pytest.mark.parametrize("damage", ["partial", "corrupt"])
def test_bad_archive_from_an_earlier_run_is_fetched_again(
    archive, server, tmp_path, damage, capsys
):
    path, md5, source = archive
    data = pathlib.Path(path).read_bytes()
    # A download cut short, or one of the right size with every byte wrong.
    bad = data[: len(data) // 3] if damage == "partial" else bytes(b ^ 1 for b in data)
    (tmp_path / ARCHIVE).write_bytes(bad)
    _download(tmp_path, server + "/" + ARCHIVE, md5)
    assert "downloading it again" in capsys.readouterr().out
    assert _Handler.requests == ["/" + ARCHIVE]
    _assert_extracted(tmp_path, source)
    assert hashlib.md5((tmp_path / ARCHIVE).read_bytes()).hexdigest() == md5


def test_connection_cut_mid_download(archive, server, tmp_path):
    with pytest.raises(download.FetchError) as e:
        _download(tmp_path, server + "/short/" + ARCHIVE, archive[1])
    assert server + "/short/" + ARCHIVE in str(e.value)
    assert os.listdir(tmp_path) == []  # nothing kept, not even the lock


def test_corrupt_archive_with_skipped_check_leaves_no_half_extraction(
    archive, tmp_path
):
    junk = tmp_path / "junk" / ARCHIVE
    junk.parent.mkdir()
    junk.write_bytes(b"not a tarball" * 1000)
    data_dir = tmp_path / "data"
    with pytest.raises(download.FetchError) as e:
        _download(data_dir, "file://" + str(junk), "skip")
    assert "Could not extract" in str(e.value)
    assert not (data_dir / fake_cifar.FOLDER).exists()
    assert _leftovers(data_dir) == []


def test_no_network_names_the_url_and_the_way_out(tmp_path):
    (port,) = free_ports(1)  # nothing listens there
    url = "http://127.0.0.1:%d/%s" % (port, ARCHIVE)
    with pytest.raises(download.FetchError) as e:
        _download(tmp_path, url, "skip")
    message = str(e.value)
    assert url in message and "--data_url" in message
    assert os.path.join(str(tmp_path), ARCHIVE) in message
    assert os.listdir(tmp_path) == []  # nothing kept, not even the lock


@pytest.mark.parametrize(
    "binary, folder_flag",
    [("cifar10_train.py", "train_dir"), ("cifar10_eval.py", "eval_dir")],
)
def test_binary_without_data_exits_with_one_clear_line_leaving_no_folder(
    binary, folder_flag, tmp_path
):
    result = run_here(
        binary,
        "--data_dir=%s" % (tmp_path / "new" / "data"),
        "--%s=%s" % (folder_flag, tmp_path / "out"),
        "--data_url=file://%s" % (tmp_path / "nowhere.tar.gz"),
        "--batch_size=32",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Could not download" in errors[0]
    # A failed start leaves nothing: no data folder, made or not, and no
    # folder of the binary's.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_signal_mid_download_removes_the_partial_file(server, tmp_path):
    # SIGTERM, which by Python's default would end the process without its
    # clean-up; the start-up makes it leave the way Ctrl+C does (SIGINT at
    # other moments: test_recovery.py).
    signum = signal.SIGTERM
    data_dir = tmp_path / "data"
    proc = Process(
        "cifar10_train.py",
        *train_flags({"root": str(data_dir)}, tmp_path / "train"),
        "--data_url=%s/stall/%s" % (server, ARCHIVE),
        log_path=tmp_path / "train.log",
    )
    try:
        proc.wait_for("^>> Downloading %s" % ARCHIVE)
        proc.send_signal(signum)
        code, out = proc.finish()
    finally:
        proc.stop()
    assert code == 128 + signum, out
    assert out.endswith("Interrupted.\n") and "Traceback" not in out, out
    # Nothing is left, not even the folder made for the download.
    assert not data_dir.exists()


def test_what_an_interrupted_fetch_left_is_removed(archive, tmp_path, capsys):
    path, md5, source = archive
    partial = tmp_path / (ARCHIVE + ".x1y2z3_4")
    partial.write_bytes(b"half an archive")
    (tmp_path / ".extracting-abcd1234" / fake_cifar.FOLDER).mkdir(parents=True)
    _download(tmp_path, "file://" + path, md5)
    _assert_extracted(tmp_path, source)
    assert _leftovers(tmp_path) == []
    assert "Removed %s, left by an interrupted download." % partial in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_archive_gets_the_modes_of_any_new_file(archive, tmp_path, umask):
    path, md5, _ = archive
    previous = os.umask(umask)
    try:
        _download(tmp_path, "file://" + path, md5)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / ARCHIVE).st_mode) == 0o666 & ~umask


def _extractall_of_python_3_11_2(original):
    """TarFile.extractall as Python 3.11 before 3.11.4 has it: no filter."""

    def extractall(self, path=".", members=None, *, numeric_owner=False):
        return original(self, path, members, numeric_owner=numeric_owner)

    return extractall


@pytest.fixture(params=["filters", "no filters"])
def python_tarfile(request, monkeypatch):
    """tarfile as this Python has it, and as Debian 12's Python 3.11.2 has it
    (without extraction filters)."""
    if request.param == "no filters":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        monkeypatch.setattr(
            tarfile.TarFile,
            "extractall",
            _extractall_of_python_3_11_2(tarfile.TarFile.extractall),
        )
    return request.param


def _archive_with(path, source_folder, add_member):
    """A .tar.gz of the data set's folder with one more member."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source_folder, arcname=fake_cifar.FOLDER)
        add_member(tar)
    return path


def _link(name, target, kind=tarfile.SYMTYPE):
    def add(tar):
        member = tarfile.TarInfo(name)
        member.type, member.linkname = kind, target
        tar.addfile(member)

    return add


def _file(name, data=b"escaped"):
    def add(tar):
        member = tarfile.TarInfo(name)
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))

    return add


def _device(name):
    def add(tar):
        member = tarfile.TarInfo(name)
        member.type = tarfile.CHRTYPE
        tar.addfile(member)

    return add


def test_extraction_works_with_and_without_tarfiles_filters(
    archive, tmp_path, python_tarfile
):
    path, md5, source = archive
    _download(tmp_path, "file://" + path, md5)
    _assert_extracted(tmp_path, source)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "member",
    [
        _file("../escaped"),
        _file("/tmp/escaped-absolute"),
        _file(fake_cifar.FOLDER + "/../../escaped"),
        _link(fake_cifar.FOLDER + "/link", "/etc/passwd"),
        _link(fake_cifar.FOLDER + "/link", "../../escaped"),
        _link(fake_cifar.FOLDER + "/hard", "/etc/passwd", tarfile.LNKTYPE),
        _device(fake_cifar.FOLDER + "/device"),
    ],
    ids=[
        "parent",
        "absolute",
        "inner-parent",
        "symlink-out",
        "symlink-up",
        "hardlink-out",
        "device",
    ],  # fmt: skip
)
def test_an_archive_reaching_outside_its_folder_is_refused(
    archive, tmp_path, python_tarfile, member
):
    evil = _archive_with(str(tmp_path / ARCHIVE), archive[2], member)
    data_dir = tmp_path / "deep" / "data"
    with pytest.raises(download.FetchError) as e:
        _download(data_dir, "file://" + evil, "skip")
    assert str(e.value).startswith("Could not extract %s (" % (data_dir / ARCHIVE))
    assert "\n" not in str(e.value)
    assert not (data_dir / fake_cifar.FOLDER).exists()
    assert _leftovers(data_dir) == []
    assert not (tmp_path / "deep" / "escaped").exists()
    assert not (tmp_path / "escaped").exists()
    assert not os.path.exists("/tmp/escaped-absolute")


def test_a_copy_with_another_checksum_offline_says_how_to_use_it(archive, tmp_path):
    path, md5, _ = archive
    # A copy of the archive whose bytes differ from the expected one's.
    (tmp_path / ARCHIVE).write_bytes(pathlib.Path(path).read_bytes() + b"\0")
    (port,) = free_ports(1)  # offline: nothing listens there
    with pytest.raises(download.FetchError) as e:
        _download(tmp_path, "http://127.0.0.1:%d/%s" % (port, ARCHIVE), md5)
    message = str(e.value)
    assert (
        "%s has another checksum than the expected archive" % (tmp_path / ARCHIVE)
        in message
    )
    assert "--data_md5=skip" in message
    assert "place the archive at %s" % (tmp_path / ARCHIVE) not in message
    # Kept as it was: it may be the only copy.
    assert (tmp_path / ARCHIVE).read_bytes() == pathlib.Path(path).read_bytes() + b"\0"

    # The same copy named by --data_url=file://.
    with pytest.raises(download.FetchError) as e:
        _download(tmp_path / "other", "file://%s" % (tmp_path / ARCHIVE), md5)
    assert "--data_md5=skip" in str(e.value)
    assert "Run again to retry" not in str(e.value)
    # And with --data_md5=skip it is used, still offline.
    _download(tmp_path, "http://127.0.0.1:%d/%s" % (port, ARCHIVE), "skip")
    assert (tmp_path / fake_cifar.FOLDER).is_dir()
