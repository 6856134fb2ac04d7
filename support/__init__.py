"""The machinery that keeps the binaries' runs safe, one module per concern.

errors          Error: what a user can put right, printed as one line
startup         a binary's start and its main(): flags, --help, errors, Ctrl+C
loading         TensorFlow's lines while it loads, held to its log level
folders         the folders the binaries write to: writable, locked, cleaned
run_folder      --train_dir: one trainer at a time, resume, what is saved there
signals         Ctrl+C and SIGTERM stop training after a step, with a checkpoint
training        the training step's log line, and the stop on a diverged loss
progress        a line that says how far long work (a download, a packing) is
checkpoints     finding, reading and restoring checkpoints
memory          whether a --batch_size fits in this machine's memory
bfloat16        whether this processor computes bfloat16 itself
download        fetching the data set's archive once, checked
images          reading image files with bounded memory, decoded as shown
image_formats   what an image file's bytes say: format, size, EXIF, palette
image_folders   which files are images, which folders splits and classes; split
cluster         where a cluster enters training: the seam, and the cluster flags
cluster_config  the cluster described, from those flags or TF_CONFIG
cluster_task    training as a task of a cluster: its server, its session
cluster_hooks   the session hooks of a cluster's training task
"""
