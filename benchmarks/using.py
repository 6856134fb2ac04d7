"""Using the model: cifar10_classify.py on PNG files (its whole run, and
its rate once its start-up, timed on one file, is left out), and the
exported SavedModel's two signatures fed batches in memory, each beside
cifar10_eval.py's rate measured right before."""

import os
import pathlib
import time

import tensorflow as tf

from benchmarks import common
from harness import fake_cifar

ROWS = common.rows("""
cifar10_eval.py, beside these      | eval_beside_using | %.0f images/sec
cifar10_classify.py, the PNG files | classify_secs     | %.1f s in all
    its rate after start-up        | classify_rate     | %.0f images/sec
SavedModel, predict_pixels         | export_pixels     | %.0f images/sec
SavedModel, serving_default (PNG)  | export_bytes      | %.0f images/sec
""")


def measure(run):
    print("cifar10_eval.py, then the classifier and the export ...", flush=True)
    train_dir = run.trained()
    figures = {"eval_beside_using": common.evaluation(run, train_dir)}
    _, images = fake_cifar.write_dataset(
        run.folder("pngs-data"), records_per_file=1, test_records=run.size.test_records
    )["test"]
    pngs = run.folder("pngs")
    for i, image in enumerate(images):
        fake_cifar.write_png(os.path.join(pngs, "%05d.png" % i), image)
    times = {}
    for name, paths in (("one", [os.path.join(pngs, "00000.png")]), ("all", [pngs])):
        start = time.perf_counter()
        run.children.run_measured(
            "cifar10_classify.py", "--checkpoint_dir=%s" % train_dir, *paths,
            "--batch_size=%d" % run.size.batch_size,
        )  # fmt: skip
        times[name] = time.perf_counter() - start
    figures["classify_secs"] = times["all"]
    figures["classify_rate"] = (len(images) - 1) / (times["all"] - times["one"])
    export_dir = run.folder("export")
    run.children.run_measured(
        "cifar10_classify.py",
        "--checkpoint_dir=%s" % train_dir,
        "--export_dir=%s" % export_dir,
    )
    (version,) = os.listdir(export_dir)
    encoded = [pathlib.Path(pngs, n).read_bytes() for n in sorted(os.listdir(pngs))]
    figures.update(
        saved_model_rates(run, os.path.join(export_dir, version), images, encoded)
    )
    return figures


def saved_model_rates(run, path, images, encoded):
    """Images/sec of the SavedModel's signatures, fed batches from memory."""
    batch = min(run.size.batch_size, len(images) - 1)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        signatures = tf.compat.v1.saved_model.load(sess, ["serve"], path).signature_def
        rates = {}
        for key, name, data in (
            ("export_pixels", "predict_pixels", images),
            ("export_bytes", "serving_default", encoded),
        ):
            signature = signatures[name]
            (feed,) = [t.name for t in signature.inputs.values()]
            fetch = signature.outputs["probabilities"].name
            position = [0]

            def run_once(fetch=fetch, feed=feed, data=data, position=position):
                start = position[0] % (len(data) - batch)
                position[0] += batch
                sess.run(fetch, {feed: data[start : start + batch]})

            rates[key] = common.median_rate(
                run_once, batch, run.size.windows, run.size.steps, warmup=2
            )
    return rates
