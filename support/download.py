"""Fetching the data set's archive once: download, verify, extract.

    download.fetch(url, md5, data_dir, folder, sizes={md5: archive_bytes})

makes sure data_dir holds the folder that the archive at url holds,
fetching and extracting the archive if need be; the binary hands it the
model's --data_url, --data_md5 and --data_dir, and the data's folder.
Both the download and the extraction go to temporary names that are renamed
into place when complete, so a process reading the data beside this one
never sees half a file. One process at a time fetches into a folder (an
evaluation started beside training waits for it, then uses its copy), and
it first removes what an interrupted fetch left there. A fetch that fails
leaves no folder it made.
"""

import contextlib
import errno
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request

from support import folders, progress
from support.errors import Error

# Bytes read and written at a time.
CHUNK_BYTES = 1 << 20
# Held in data_dir by the process that fetches into it.
LOCK_FILE = ".download.lock"
# What cifar10_pack.py leaves in the data_dir it packs into: its lock, its
# work under way (or, once it was killed, cut short), and the list of files
# it skipped, which stays when it refused the images.
PACK_LOCK = ".pack.lock"
PACK_STAGING = ".packing-"
PACK_SKIPPED = ".skipped.txt"
# The temporary names: <archive>.<8 characters> while downloading,
# .extracting-<8 characters> while extracting.
PARTIAL = r"^(%s\.|\.extracting-)[a-z0-9_]{8}$"
# What is said of an archive that fails its check.
DIFFERS = "has another checksum than the expected archive"
# The way out when it is the user's own copy.
TRUST_IT = "if you trust it, pass --data_md5=skip to use it as it is"


class FetchError(Error):
    """The data cannot be fetched or is corrupt; the message says what to do."""


def fetch(url, md5, data_dir, folder, sizes=None):
    """Makes sure data_dir/folder holds the extracted archive at url.

    Nothing is fetched or checked when the folder is already there, so the
    files can also be placed by hand. An archive already in data_dir is used
    when its checksum matches and fetched again when it does not (a partial
    download of an earlier run, say).

    Args:
      url: where the archive is: http(s)://, file:// or ftp:// (--data_url).
      md5: its expected MD5 in hex, or "skip" to accept any archive
        (--data_md5).
      data_dir: the folder to keep the archive and the extracted folder in
        (--data_dir).
      folder: the folder the archive holds, e.g. cifar-10-batches-bin.
      sizes: {MD5: size in bytes} of archives whose size is known, a quick
        check before the MD5.

    Raises:
      FetchError: the data cannot be fetched or is corrupt; the message says
        what to do. The folders made for it are removed.
    """
    if os.path.isdir(os.path.join(data_dir, folder)):
        return
    _check_not_packed_into(data_dir, folder)
    md5 = md5.lower()
    with folders.removed_on_failure(data_dir):
        _fetch(url, md5, (sizes or {}).get(md5), data_dir, folder)


def _check_not_packed_into(data_dir, folder):
    """Raises FetchError when data_dir is one that cifar10_pack.py packs into,
    was cut short in, or refused the images in, rather than let a download
    fill it with another data set."""
    staging = sorted(n for n in _names(data_dir) if n.startswith(PACK_STAGING))
    packer = folders.holder(os.path.join(data_dir, PACK_LOCK))
    skipped = os.path.join(data_dir, folder + PACK_SKIPPED)
    if packer:
        problem = (
            "is being packed into (%s); wait for the packing to end, then run "
            "again" % packer
        )
    elif staging:
        problem = (
            "holds what an interrupted packing left (%s) and no data: pack the "
            "images into it again, or choose another --data_dir" % ", ".join(staging)
        )
    elif os.path.exists(skipped):
        problem = (
            "holds no data but the list of the images a packing skipped (%s): that "
            "packing failed. Pack the images into it again, or choose another "
            "--data_dir" % skipped
        )
    else:
        return
    raise FetchError("--data_dir=%s %s. Nothing was written." % (data_dir, problem))


def _names(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _fetch(url, md5, size, data_dir, folder):
    """fetch(), with the archive's expected size or None."""
    extracted = os.path.join(data_dir, folder)
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise FetchError(
            "Cannot create --data_dir=%s (%s). Choose a folder you can write to."
            % (data_dir, e.strerror or e)
        ) from None

    filename = os.path.basename(urllib.parse.urlparse(url).path)
    archive = os.path.join(data_dir, filename or folder + ".tar.gz")
    with _only_process_in(data_dir):
        if os.path.isdir(extracted):
            return  # fetched by the process this one waited for
        partial = re.compile(PARTIAL % re.escape(os.path.basename(archive)))
        for name in folders.remove_leftovers(data_dir, partial):
            print(
                "Removed %s, left by an interrupted download."
                % os.path.join(data_dir, name)
            )
        problem = "missing"
        if os.path.exists(archive):
            problem = _archive_problem(archive, md5, size)
            if problem:
                print("%s %s (%s); downloading it again." % (archive, DIFFERS, problem))
        if problem:
            _download(url, archive, md5, size, folder, problem)
        _extract(archive, data_dir, folder)


@contextlib.contextmanager
def _only_process_in(data_dir):
    """Holds the lock of data_dir, waiting for a process that holds it."""
    with contextlib.ExitStack() as lock:
        try:
            lock.enter_context(
                folders.locked(
                    os.path.join(data_dir, LOCK_FILE),
                    wait_message="Waiting for another process to finish fetching "
                    "the data into %s ..." % data_dir,
                )
            )
        except OSError as e:
            raise FetchError(
                "Cannot write to --data_dir=%s (%s). Choose a folder you can write "
                "to." % (data_dir, e.strerror or e)
            ) from None
        yield


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _archive_problem(path, md5, size):
    """Why the archive at path is not the expected one, or None if it is."""
    if md5 == "skip":
        return None
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        return "it is %d bytes, not %d" % (actual_size, size)
    actual_md5 = _md5(path)
    if actual_md5 != md5:
        return "its MD5 is %s, not %s (--data_md5)" % (actual_md5, md5)
    return None


def _download(url, path, md5, size, folder, local_problem):
    """Downloads url to path through a temporary file, with a progress line.

    local_problem is what is wrong with the copy already at path, or
    "missing"; the copy stays until the download has passed its checks.

    Raises:
      FetchError: the download failed or is not the expected file.
    """
    filename = os.path.basename(path)
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix=filename + ".")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0)
            done = _copy_with_progress(r, out, filename, total)
        if total and done < total:
            raise FetchError(
                "The download from %s stopped after %d of %d bytes. Run again to "
                "retry." % (url, done, total)
            )
        problem = _archive_problem(tmp_path, md5, size)
        if problem:
            raise FetchError(
                "%s %s (%s): %s, or pass --data_url for another source."
                % (url, DIFFERS, problem, TRUST_IT)
            )
        # mkstemp() makes a file only its owner can read; a downloaded file
        # gets the modes of any other new file.
        os.chmod(tmp_path, 0o666 & ~folders.umask())
        os.replace(tmp_path, path)
        print("Successfully downloaded %s, %d bytes." % (filename, done))
    except (OSError, http.client.HTTPException, ValueError) as e:
        # OSError covers urllib.error.URLError too.
        if getattr(e, "errno", None) == errno.ENOSPC:
            raise _no_space(os.path.dirname(path), "downloading " + url, size) from None
        raise _cannot_download(url, e, path, folder, local_problem) from None
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def _cannot_download(url, e, path, folder, local_problem):
    filename = os.path.basename(path)
    if local_problem != "missing":
        return FetchError(
            "Could not download %s (%s). The copy at %s %s (%s): %s."
            % (url, e, path, DIFFERS, local_problem, TRUST_IT)
        )
    return FetchError(
        "Could not download %s (%s). Without network access, place the "
        "archive at %s or its extracted %s folder in --data_dir, or pass "
        "--data_url=file:///path/to/%s or a mirror." % (url, e, path, folder, filename)
    )


def _no_space(data_dir, doing, archive_bytes):
    """archive_bytes: the archive's size, or None when it is not known."""
    needs = (
        " (the archive and its extracted files take about %d MB)"
        % (2 * archive_bytes / 1e6)
        if archive_bytes
        else ""
    )
    return FetchError(
        "No space left on the device of --data_dir=%s while %s. Free some space "
        "there%s, or choose another --data_dir, and run again."
        % (data_dir, doing, needs)
    )


def _copy_with_progress(response, out, filename, total):
    """Copies the response to out, with a progress line.

    Returns:
      The number of bytes copied.
    """

    def describe(done, percent):
        if total:
            return ">> Downloading %s %.1f%% (%.1f of %.1f MB)" % (
                filename,
                percent,
                done / 1e6,
                total / 1e6,
            )
        return ">> Downloading %s %.1f MB" % (filename, done / 1e6)

    line = progress.Progress(total, describe)
    done = 0
    # read1() returns what has come so far, rather than waiting for a full chunk.
    for chunk in iter(lambda: response.read1(CHUNK_BYTES), b""):
        out.write(chunk)
        done += len(chunk)
        line.update(done)
    line.end()
    return done


def _extract(archive, data_dir, folder):
    """Extracts folder from the archive into data_dir, through a temporary
    folder renamed into place.

    Raises:
      FetchError: the archive cannot be read or lacks the folder, or the disk
        is full.
    """
    extracted = os.path.join(data_dir, folder)
    staging = tempfile.mkdtemp(dir=data_dir, prefix=".extracting-")
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _plain_members(tar)
                if hasattr(tarfile, "data_filter"):
                    # Python 3.11.4 and later check each member once more.
                    tar.extractall(staging, members, filter="data")
                else:
                    tar.extractall(staging, members)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _no_space(
                    data_dir,
                    "extracting %s, which is intact" % archive,
                    os.path.getsize(archive),
                ) from None
            raise _cannot_extract(archive, e) from None
        except (tarfile.TarError, EOFError) as e:
            raise _cannot_extract(archive, e) from None
        if not os.path.isdir(os.path.join(staging, folder)):
            raise FetchError(
                "%s holds no %s folder: it is not the expected archive."
                % (archive, folder)
            )
        os.rename(os.path.join(staging, folder), extracted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _plain_members(tar):
    """The members of an archive, each a file or folder inside it.

    Python's own filter="data" comes with Python 3.11.4; Debian 12's Python
    (3.11.2) lacks it, so every member is checked here, on every Python.

    Yields:
      The members, in order, as the archive is read.

    Raises:
      tarfile.TarError: a member is a link, a device or a pipe, or its name
        leads out of the folder it is extracted to.
    """
    for member in tar:
        parts = member.name.split("/")
        if member.name.startswith("/") or ".." in parts:
            raise tarfile.TarError("%r leads out of the archive's folder" % member.name)
        if not (member.isfile() or member.isdir()):
            raise tarfile.TarError("%r is not a plain file or folder" % member.name)
        # No set-user-id bits, and nothing others may write to.
        member.mode &= 0o755
        yield member


def _cannot_extract(archive, e):
    return FetchError(
        "Could not extract %s (%s). Delete it and run again to download it "
        "afresh." % (archive, e)
    )
