"""Root pytest configuration.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is decorated, so it is set here,
at the very top, and only when no CUDA device exists (so the same tests compile for real on a GPU).
"""

import os

try:  # torch is imported lazily elsewhere; here we only need to know whether CUDA exists
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTENSOR_FLAGS", "")

import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# Temporary files of the code under test go into one folder per session, removed at its end:
# notebook kernels' fixture runs, killed data workers' pymp-* folders, torchrun's torchelastic_*,
# PyTensor's numba sources, torch's inductor cache (set TORCHINDUCTOR_CACHE_DIR to keep one).
# Subprocesses read TMPDIR (set here, before test modules copy os.environ); this process reads
# tempfile.tempdir, switched once pytest's own tmp_path root is fixed in the system folder.
_SYSTEM_TMP = tempfile.gettempdir()
SESSION_TMP = tempfile.mkdtemp(prefix="cram-tests-")
os.environ["TMPDIR"] = SESSION_TMP
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(SESSION_TMP, "torchinductor"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not _HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def _temp_files_in_the_session_folder(tmp_path_factory):
    tmp_path_factory.getbasetemp()  # pytest's tmp_path root (kept as its retention says) first
    tempfile.tempdir = SESSION_TMP
    yield
    tempfile.tempdir = _SYSTEM_TMP


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_TMP, ignore_errors=True)
