"""Each binary's --help lists its own flags and the shared ones, with defaults."""

import pytest

from harness.procs import run_binary


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, own",
    [
        (
            "cifar10_train.py",
            ["--train_dir", "--fresh_start", "--ps_hosts", "--sync_replicas"],
        ),
        (
            "cifar10_multi_gpu_train.py",
            ["--num_gpus", "--train_dir", "--max_steps", "--job_name", "--task_index"],
        ),
        ("cifar10_eval.py", ["--eval_dir", "--checkpoint_dir", "--run_once"]),
        (
            "cifar10_classify.py",
            ["--checkpoint_dir", "--checkpoint", "--top_k", "--output", "--export_dir"],
        ),
    ],
)
def test_help_lists_own_and_shared_flags(script, own):
    result = run_binary(script, "--help")  # absl exits 1 after the help text
    assert "Traceback" not in result.stderr
    text = result.stdout
    for flag in own + ["--batch_size", "--data_dir", "--use_fp16", "--data_url"]:
        assert flag.lstrip("-") + ":" in text, flag  # booleans read --[no]name
    assert "(default: '128')" in text  # --batch_size
    assert "(default: '/tmp/cifar10_data')" in text
