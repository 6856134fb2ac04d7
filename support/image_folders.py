"""Folders of images as people have them: which files are images, which
folders are splits and which are classes, and a split into training and test
images that gives every class its share and stays put as images are added.

    files, problems = image_folders.image_files(paths)  # to classify
    found = image_folders.find(image_dir, "batches.meta.txt")  # to pack
    found = image_folders.split(found, test_fraction)  # without split folders

One rule says which files are images, for packing and classifying alike:
- a file whose name ends in one of images.EXTENSIONS (any case) and does not
  begin with "." (macOS writes ._<name> beside each file it copies to a disk
  of another system: AppleDouble data, not an image);
- in a folder whose name does not begin with "." and is none of those that
  systems keep for themselves (SYSTEM_FOLDERS: Synology's @eaDir
  thumbnails, the __MACOSX of a zip made on a Mac, Windows' $RECYCLE.BIN and
  System Volume Information, ...);
- through links to folders too, each folder once (a loop of links ends).

find() reads an image folder as a folder per class, or as a training and a
test folder (split names, any case: train or training, test or testing,
each alone or with _set, as Kaggle's training_set/ and test_set/) that each
hold a folder per class. A split folder is never a class. Class names are
the folders' names in NFC, the form macOS's NFD spellings normalize to.

Importing this module changes nothing.
"""

import collections
import hashlib
import math
import os
import re
import unicodedata
from typing import NamedTuple

from support import images
from support.errors import Error

# Folders that systems keep for themselves beside one's files, by name in
# any case: never entered, never a class.
SYSTEM_FOLDERS = {
    name.casefold(): name
    for name in (
        "@eaDir", "#recycle", "#snapshot",  # Synology
        "@Recycle", "@Recently-Snapshot",  # QNAP
        "__MACOSX",  # a zip made on a Mac
        "$RECYCLE.BIN", "RECYCLER", "System Volume Information",  # Windows
        "lost+found",  # Linux file systems
    )
}  # fmt: skip
# The names of split folders, in any case, and the split each names.
SPLIT_NAME = re.compile(
    r"(train|training|test|testing|val|valid|validation)([ _-]?set)?", re.I
)
SPLITS = {"train": "train", "training": "train", "test": "test", "testing": "test"}
SPLITS.update(dict.fromkeys(("val", "valid", "validation"), "val"))
# A label byte tells this many classes apart.
MOST_CLASSES = 256

# The kinds of skips (images.Skip) found while listing the files, and the
# line that counts each kind.
LEADS_OUT = "leads out"
TWICE = "twice"
NO_FOLDER = "no folder"
SUMMARY = {
    LEADS_OUT: "%d link(s) that lead out of their class folder (not followed)",
    TWICE: "%d file(s) met a second time through a link (each is packed once)",
    NO_FOLDER: "%d folder(s) that could not be read",
}


class LayoutError(Error):
    """The folder is not laid out as a folder per class (or per split and
    class); the message says what to change."""


class Found(NamedTuple):
    """What an image folder holds, as find() lists it.

    Attributes:
      folder: the image folder.
      class_names: sorted, in NFC.
      splits: {"train": [(path, label, bytes)], "test": [...]}; or, for a
        folder without split folders, {"": [...]} until split() splits it.
      split_folders: the names of its training and test folders, such as
        ("Train", "Test"), or None.
      skips: [images.Skip] of the files and folders left out.
      ignored: {extension: files} of the files not named as images.
      notes: a line for each kind of thing left out on purpose.
    """

    folder: str
    class_names: list
    splits: dict
    split_folders: tuple
    skips: list
    ignored: dict
    notes: list


def is_image(name):
    """Whether a file's name says it is an image this reads."""
    return not name.startswith(".") and images.is_image_name(name)


def split_of(name):
    """The split a folder's name names, "train", "test" or "val"; else
    None."""
    match = SPLIT_NAME.fullmatch(name)
    return SPLITS[match[1].lower()] if match else None


class Tally:
    """What a walk passed over: files not named as images (by extension),
    system folders (by name), and folders it could not read ((path,
    OSError))."""

    def __init__(self):
        self.ignored = collections.Counter()
        self.system = collections.Counter()
        self.unreadable = []

    def add(self, other):
        self.ignored.update(other.ignored)
        self.system.update(other.system)
        self.unreadable += other.unreadable


def walk(folder, tally, follow=None):
    """Yields the os.DirEntry of each image file under folder, in no set
    order, by the rule above.

    Args:
      folder: where to begin.
      tally: a Tally that counts what the walk passes over.
      follow: follow(entry) says whether to go through a link to an image
        file or a folder; None for every link.
    """
    stack, seen = [folder], set()
    while stack:
        path = stack.pop()
        try:
            info = os.stat(path)
            if (info.st_dev, info.st_ino) in seen:
                continue  # met before: a loop of links
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError as e:
            tally.unreadable.append((path, e))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            linked = entry.is_symlink() and follow is not None
            if _is_folder(entry):
                if name.casefold() in SYSTEM_FOLDERS:
                    tally.system[SYSTEM_FOLDERS[name.casefold()]] += 1
                elif not linked or follow(entry):
                    stack.append(entry.path)
            elif not images.is_image_name(name):
                tally.ignored[os.path.splitext(name)[1].lower() or "(none)"] += 1
            elif not linked or follow(entry):
                yield entry


def _is_folder(entry):
    """Whether an os.DirEntry is a folder, or a link to one; False for a
    link that cannot be followed (a loop of links: reading it says so)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def image_files(paths):
    """The files that paths name, folders searched for images by the rule
    above.

    Returns:
      (files, problems): the files in order, and a line for each path that
      is missing, a folder without images, or a folder that cannot be read.
    """
    files, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            tally = Tally()
            found = sorted(entry.path for entry in walk(path, tally))
            problems += [
                "Cannot read the folder %s (%s); skipped."
                % (images.shown(folder), error.strerror or error)
                for folder, error in tally.unreadable
            ]
            if not found and not tally.unreadable:
                problems.append(
                    "The folder %s holds no image files (%s)%s."
                    % (images.shown(path), ", ".join(images.EXTENSIONS), held(tally))
                )
            files.extend(found)
        elif os.path.lexists(path):
            files.append(path)  # whether it can be read, reading it says
        else:
            problems.append("No such file or folder: %s." % images.shown(path))
    return files, problems


def held(tally, more=()):
    """What a folder without image files holds, for the end of a line: ""
    when nothing, else ": it holds ...".

    Args:
      tally: the Tally of its walk.
      more: (count, what) of other things in it.
    """
    by_count = sorted(tally.ignored.items(), key=lambda item: (-item[1], item[0]))
    parts = ["%d %s" % (n, images.shown(extension)) for extension, n in by_count]
    if parts:
        parts[-1] += " file(s)"
    parts += ["%d %s" % (n, what) for n, what in more if n]
    parts += [
        "%d %s folder(s), skipped" % (n, name) for name, n in tally.system.items()
    ]
    if not parts:
        return ""
    unread = sorted(e for e in tally.ignored if e in images.OTHER_IMAGE_EXTENSIONS)
    return ": it holds %s%s" % (
        ", ".join(parts),
        ". Images in %s are not read: convert them to JPEG or PNG" % ", ".join(unread)
        if unread
        else "",
    )


def _listing(folder, tally):
    """The folders directly in folder ({name: path}, sorted, those systems
    keep counted in tally) and how many image files lie there beside them.

    Raises:
      LayoutError: folder cannot be read.
    """
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as e:
        raise LayoutError(
            "Cannot read the folder %s (%s)." % (images.shown(folder), e.strerror)
        ) from None
    folders, loose = {}, 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if _is_folder(entry):
            if entry.name.casefold() in SYSTEM_FOLDERS:
                tally.system[SYSTEM_FOLDERS[entry.name.casefold()]] += 1
            else:
                folders[entry.name] = entry.path
        elif is_image(entry.name):
            loose += 1
    return folders, loose


def find(image_dir, names_file):
    """The classes of an image folder, the image files of each (in each
    split), and what was left out.

    Args:
      image_dir: the image folder, which must be a folder.
      names_file: the name of the file the class names go to, one a line
        (for messages).

    Returns:
      A Found. Without split folders, its images are in splits[""]: split()
      splits them.

    Raises:
      LayoutError: the folder is not laid out as a folder per class (or per
        split and class), a class name would not read back from a file of
        one name a line, or a class has no images.
    """
    tally = Tally()
    top, loose = _listing(image_dir, tally)
    folders, left_out = _splits(image_dir, top)
    loose_images = {image_dir: loose}
    classes = {}
    for split, folder in folders.items():
        inside = top
        if split:
            folder, inside, loose = _unwrapped(folder, split, tally)
            folders[split], loose_images[folder] = folder, loose
        classes[split] = _class_folders(folder, inside, names_file)
    class_names = list(classes[next(iter(classes))])
    if len(classes) == 2 and list(classes["test"]) != class_names:
        only = [sorted(set(classes[a]) - set(classes[b])) for a, b in
                (("train", "test"), ("test", "train"))]  # fmt: skip
        raise LayoutError(
            "%s and %s hold other classes: only in train: %s; only in test: %s. "
            "Give both the same class folders."
            % (*(images.shown(folders[s]) for s in ("train", "test")),
               *(", ".join(names) or "-" for names in only))
        )  # fmt: skip
    lister = _Lister([f for c in classes.values() for fs in c.values() for f in fs])
    splits = {split: lister.files(classes[split], tally) for split in folders}
    notes = _notes(image_dir, folders, left_out, loose_images, tally)
    return Found(
        image_dir,
        class_names,
        splits,
        tuple(os.path.basename(folders[s]) for s in ("train", "test"))
        if "train" in folders
        else None,
        lister.skips,
        dict(tally.ignored),
        notes,
    )


def _splits(image_dir, top):
    """The split folders of image_dir, {"train": path, "test": path}, or
    {"": image_dir} for a folder per class; and the names of the folders
    left out beside the split folders. A validation folder is the test
    split where there is no test folder, and left out where there is.

    Raises:
      LayoutError: the split folders are not a training and a test folder.
    """
    named = collections.defaultdict(list)
    for name in top:
        if split_of(name):
            named[split_of(name)].append(name)
    if not named:
        return {"": image_dir}, []
    shown = images.shown(image_dir)
    for names in named.values():
        if len(names) > 1:
            raise LayoutError(
                "%s holds %s, folders of one split: keep one of them."
                % (shown, " and ".join(name + "/" for name in names))
            )
    chosen = {split: names[0] for split, names in named.items()}
    test = chosen.get("test") or chosen.get("val")
    if "train" in chosen and test:
        left_out = [n for n in top if n not in (chosen["train"], test)]
        return {"train": top[chosen["train"]], "test": top[test]}, left_out
    others = [name for name in top if not split_of(name)]
    there = chosen.get("train") or chosen.get("test") or chosen["val"]
    if others:
        raise LayoutError(
            "%s holds %s, a split's name, beside the folders %s: give it a "
            "training and a test folder, each with a folder per class, or rename "
            "%s if it is a class." % (shown, there + "/", _some(others), there + "/")
        )
    missing = "test" if "train" in chosen else "train"
    raise LayoutError(
        "%s has a %s/ folder but no %s/ folder. Give it both, %s/train/<class>/... "
        "and %s/test/<class>/..., or a folder per class and no %s/."
        % (shown, there, missing, shown, shown, there)
    )


def _some(names, most=4):
    """The first few names, as one phrase."""
    shown = [images.shown(name) for name in names[:most]]
    return ", ".join(shown) + (", ..." if len(names) > most else "")


def _unwrapped(folder, split, tally):
    """The folder of a split's class folders: folder, or the one folder in it
    of the same split's name (Kaggle's training_set/training_set/); and
    what _listing() says of it."""
    inside, loose = _listing(folder, tally)
    if len(inside) == 1 and not loose:
        ((name, path),) = inside.items()
        if split_of(name) == split:
            return path, *_listing(path, tally)
    return folder, inside, loose


def _left_out(image_dir, folders, left_out):
    """The line that names the folders beside the split folders, which are
    left out, with the images each holds."""
    counts = []
    for name in left_out:
        path = os.path.join(image_dir, name)
        found = sum(1 for _ in walk(path, Tally()))
        counts.append("%s/ (%d images)" % (images.shown(name), found))
    return "Note: left out what %s holds beside %s/ and %s/: %s." % (
        images.shown(image_dir),
        *(os.path.basename(folders[s]) for s in ("train", "test")),
        ", ".join(counts),
    )


def _notes(image_dir, folders, left_out, loose_images, tally):
    """The lines for a validation folder taken as the test split, the
    folders left out beside the split folders, the image files that lie
    beside class folders, and the system folders skipped."""
    notes = []
    if split_of(os.path.basename(folders.get("test", ""))) == "val":
        notes.append(
            "Note: %s is the test split: there is no test folder."
            % images.shown(folders["test"])
        )
    if left_out:
        notes.append(_left_out(image_dir, folders, left_out))
    loose = {folder: n for folder, n in loose_images.items() if n}
    if loose:
        notes.append(
            "Note: left out %d image file(s) that lie in no class folder: %s. Put "
            "each in its class folder to pack it."
            % (
                sum(loose.values()),
                ", ".join("%d in %s" % (n, images.shown(f)) for f, n in loose.items()),
            )
        )
    if tally.system:
        notes.append(
            "Note: skipped %d folder(s) that systems keep for themselves, not "
            "images: %s."
            % (
                sum(tally.system.values()),
                ", ".join(
                    "%d %s" % (n, name) for name, n in tally.system.most_common()
                ),
            )
        )
    return notes


def _class_folders(folder, inside, names_file):
    """{class name: [its folders]} of the class folders in folder, sorted by
    name: two or more, each named on one line of names_file. Spellings of
    one name in NFC and NFD are one class.

    Args:
      folder: the folder of class folders.
      inside: {name: path} of the folders in it.
      names_file: the file of class names, for messages.

    Raises:
      LayoutError: fewer than two, more than a label byte can tell apart, one
        named as a split, one whose name would not read back from
        names_file as it is, or names that differ only in case.
    """
    shown = images.shown(folder)
    classes = collections.defaultdict(list)
    for name, path in inside.items():
        problem = name_problem(name)
        if problem:
            raise LayoutError(
                "The class folder %s has a name that %s; class names are written "
                "one a line to %s. Rename it. Nothing was written."
                % (images.shown(path), problem, names_file)
            )
        if split_of(name):
            raise LayoutError(
                "%s holds %s/, a split's name, among its class folders: a split "
                "folder is never a class. Move it out, or rename it if it is a "
                "class." % (shown, name)
            )
        classes[unicodedata.normalize("NFC", name)].append(path)
    by_case = collections.defaultdict(list)
    for name in classes:
        by_case[name.casefold()].append(name)
    for twins in by_case.values():
        if len(twins) > 1:
            raise LayoutError(
                "%s holds the class folders %s, whose names differ only in case: "
                "merge them, or rename all but one. Nothing was written."
                % (shown, " and ".join(sorted(twins)))
            )
    if not classes:
        raise LayoutError(
            "%s holds no class folders. Put each class's images in a folder of "
            "its own, %s/<class>/... (or %s/train/<class>/... and "
            "%s/test/<class>/...)." % (shown, shown, shown, shown)
        )
    if len(classes) == 1:
        raise LayoutError(
            "%s holds one class folder (%s); a data set needs two or more."
            % (shown, next(iter(classes)))
        )
    if len(classes) > MOST_CLASSES:
        raise LayoutError(
            "%s holds %d class folders; a label byte tells %d apart at most."
            % (shown, len(classes), MOST_CLASSES)
        )
    return dict(sorted(classes.items()))


def name_problem(name):
    """Why a class name would not read back from a file of one name a line
    (read as UTF-8 with the spaces at either end dropped), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8 text"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "holds a line break or another control character"
    if name != name.strip():
        return "begins or ends with a space"
    return None


class _Lister:
    """Lists the image files of class folders, each real file once, and
    never under a class it does not sit in.

    A class folder's subfolders and links are followed, but not a link that
    leads to a folder above it (which holds the other classes) or into
    another class folder (of either split). A file met again (through a
    link, or a hard link) is packed once, where it is met first.

    Args:
      class_folders: the paths of every class folder, of both splits.
    """

    def __init__(self, class_folders):
        self._class_folders = {os.path.realpath(f): f for f in class_folders}
        self._seen = {}
        self.skips = []

    def files(self, classes, tally):
        """[(path, label, bytes)] of the image files of classes ({name: [its
        folders]}, in label order), each class's sorted by path; what the
        walks pass over is added to tally.

        Raises:
          LayoutError: a class has no image files, or only files met before.
        """
        files = []
        for label, class_folders in enumerate(classes.values()):
            _check_holds_no_other(class_folders, self._class_folders)
            mine, links_out = Tally(), len(self.skips)
            found = sorted(f for c in class_folders for f in self._under(c, mine))
            links_out = len(self.skips) - links_out
            tally.add(mine)
            self.skips += [
                images.Skip(
                    NO_FOLDER,
                    "Cannot read the folder %s (%s)."
                    % (images.shown(path), e.strerror),
                )
                for path, e in mine.unreadable
            ]
            if not found:
                raise LayoutError(_no_images(class_folders[0], mine, links_out))
            before = len(files)
            for path, identity, size in found:
                first = self._seen.setdefault(identity, path)
                if first != path:
                    self._skip(TWICE, "%s is %s again; packed once." % (path, first))
                else:
                    files.append((path, label, size))
            if len(files) == before:
                raise LayoutError(_all_met_before(class_folders[0], found, self._seen))
        return files

    def _under(self, class_folder, tally):
        """(path, identity, bytes) of the image files under class_folder."""
        home = os.path.realpath(class_folder)
        for entry in walk(class_folder, tally, lambda e: self._stays(e.path, home)):
            yield entry.path, *_identity(entry)

    def _stays(self, link, home):
        """Whether a link under the class folder at home (a real path) leads
        neither above home nor into another class folder."""
        real = os.path.realpath(link)
        if within(real, home):
            return True
        above = within(home, real)
        other = next(
            (f for r, f in self._class_folders.items() if within(real, r)), None
        )
        if not above and other is None:
            return True  # a link to images kept elsewhere
        self._skip(
            LEADS_OUT,
            "%s is a link to %s, %s; not followed."
            % (
                link,
                real,
                "a folder that holds its class folder"
                if above
                else "inside the class folder %s" % other,
            ),
        )
        return False

    def _skip(self, kind, line):
        self.skips.append(images.Skip(kind, images.shown(line)))


def _check_holds_no_other(class_folders, every_class_folder):
    """Raises LayoutError for a class folder that holds another (a link to
    the folder above it); every_class_folder is {real path: path}."""
    for folder in class_folders:
        home = os.path.realpath(folder)
        for real, other in every_class_folder.items():
            if real != home and within(real, home):
                raise LayoutError(
                    "The class folder %s holds the class folder %s: it is a link "
                    "to %s. Remove it, or give each class a folder of its own."
                    % tuple(map(images.shown, (folder, other, home)))
                )


def _no_images(class_folder, tally, links_out):
    """The message for a class folder in which no image file was found."""
    if tally.unreadable:
        path, error = tally.unreadable[0]
        return (
            "The class folder %s holds no image files that can be read: cannot "
            "read the folder %s (%s)."
            % (images.shown(class_folder), images.shown(path), error.strerror)
        )
    links = [(links_out, "link(s) that lead out of it (not followed)")]
    return "The class folder %s holds no image files (%s)%s." % (
        images.shown(class_folder),
        ", ".join(images.EXTENSIONS),
        held(tally, links),
    )


def _all_met_before(class_folder, found, seen):
    """The message for a class folder whose image files all were met before,
    under another class or split."""
    path, identity, _ = found[0]
    return (
        "The image files of the class folder %s were all met before, under "
        "another class or split (%s is %s again): links or hard links to the "
        "same files, each packed once, where it is met first. Give the class "
        "images of its own."
        % tuple(map(images.shown, (class_folder, path, seen[identity])))
    )


def within(path, folder):
    """Whether the real path lies in the real folder (or is it)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _identity(entry):
    """(what tells the file at entry from every other, its bytes); for one
    that cannot be seen, its path and 0 (reading it says why)."""
    try:
        info = entry.stat()
    except OSError:
        return ("path", entry.path), 0
    return (info.st_dev, info.st_ino), info.st_size


def split(found, test_fraction):
    """found, its images split into training and test images, class by
    class (stratified), and stable as images are added.

    A hash of each image's path (under found.folder, in NFC) gives it a
    place in [0, 1). In a class, the images placed below test_fraction are
    its test images, as long as they number range_of_test_images() of the
    class; else the fewest images next to that line move, to the nearest end
    of the range. So images added later move no old one, but in a class whose
    count leaves its range, and there the fewest. A class of one image has no
    test image.

    Returns:
      found, with splits {"train": [...], "test": [...]}, each in the order
      of splits[""], and a note that names the classes too small to test.
    """
    files = found.splits[""]
    by_class = collections.defaultdict(list)
    for path, label, _ in files:
        by_class[label].append((_place(found.folder, path), path))
    test, alone = set(), []
    line = test_fraction * 2**64
    for label, placed in sorted(by_class.items()):
        placed.sort()
        if len(placed) == 1:
            alone.append(found.class_names[label])
            continue
        low, high = range_of_test_images(len(placed), test_fraction)
        count = min(max(sum(place < line for place, _ in placed), low), high)
        test.update(path for _, path in placed[:count])
    notes = list(found.notes)
    if alone:
        notes.append(
            "Note: the class(es) %s hold one image each, too few to test: it is a "
            "training image, and evaluation scores none of theirs." % ", ".join(alone)
        )
    return found._replace(
        splits={
            "train": [f for f in files if f[0] not in test],
            "test": [f for f in files if f[0] in test],
        },
        notes=notes,
    )


def range_of_test_images(n, fraction):
    """(fewest, most) test images of a class of n images, two or more: the
    share fraction of n, rounded, give or take the spread chance gives a
    count of that share (a standard deviation, whole images); at least 1
    and at most n - 1."""
    expected = fraction * n
    spread = math.floor(math.sqrt(expected * (1 - fraction)))
    target = min(max(math.floor(expected + 0.5), 1), n - 1)
    return max(1, target - spread), min(n - 1, target + spread)


def _place(folder, path):
    """The place of an image at path under folder in [0, 2**64): a hash of
    its path under folder, not of its place in a listing."""
    # Paths are listed as folder/...: cut, as os.path.relpath() would say.
    prefix = folder if folder.endswith("/") else folder + "/"
    relative = path[len(prefix) :] if path.startswith(prefix) else path
    relative = unicodedata.normalize("NFC", relative)
    digest = hashlib.sha256(relative.encode("utf-8", "surrogateescape"))
    return int.from_bytes(digest.digest()[:8], "big")
