"""What the tests and the benchmark share: fake data sets in the official
layout (fake_cifar) and running the binaries as processes (procs)."""
