# Sourced by the scripts: the project's torch virtualenv and the variables tch's
# build needs. `source scripts/env.sh` in a shell gives the same environment.
MAELAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MAELAB_ROOT
export MAELAB_VENV="${MAELAB_VENV:-$MAELAB_ROOT/.venv}"
export VIRTUAL_ENV="$MAELAB_VENV"
export PATH="$MAELAB_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export MAELAB_CIFAR10="${MAELAB_CIFAR10:-$MAELAB_ROOT/../shared/data/cifar10-jpeg.tar.gz}"
