"""The machinery that keeps the binaries' runs safe, one module per concern.

errors      Error: what a user can put right, printed as one line
startup     what a binary does first and around its main(): TensorFlow's
            environment, flags, --help, one line for an error, Ctrl+C
folders     the folders the binaries write to: writable, locked, cleaned
run_folder  --train_dir: one trainer at a time, resume, what is saved there
signals     Ctrl+C and SIGTERM stop training after a step, with a checkpoint
checkpoints finding, reading and restoring checkpoints
training    what both training binaries share: their flags, the log line
download    fetching the data set's archive once, checked
image_folders  which files are images, which folders are splits and classes;
            the split into training and test images
cluster     where a cluster enters training: the seam, and the cluster flags
cluster_config  the cluster described, from those flags or TF_CONFIG
cluster_task    training as a task of a cluster: its server, its session
cluster_hooks   the session hooks of a cluster's training task
"""
