"""Which BLAS a peer process really loaded, read from its own memory map.

Debian's python3-torch and python3-faiss link libblas.so.3, which the
alternatives system points at either the reference BLAS (package libblas3,
unoptimised) or OpenBLAS (libopenblas0-pthread). A benchmark against a
peer on the reference BLAS measures nothing useful, so bench scripts call
require_fast_blas() before printing a headline.
"""
import os
import sys


def loaded_blas():
    """Return (kind, paths): kind is openblas, mkl, blis, reference or none."""
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and ".so" in parts[5]:
                p = parts[5]
                base = os.path.basename(p)
                if "blas" in base or "mkl" in base or "lapack" in base:
                    paths.add(p)
    kinds = set()
    for p in paths:
        low = p.lower()
        if "openblas" in low:
            kinds.add("openblas")
        elif "mkl" in low:
            kinds.add("mkl")
        elif "blis" in low:
            kinds.add("blis")
        elif os.path.basename(low).startswith("libblas.so") or "/blas/" in low:
            kinds.add("reference")
    for k in ("openblas", "mkl", "blis", "reference"):
        if k in kinds:
            return k, sorted(paths)
    return "none", sorted(paths)


def describe():
    kind, paths = loaded_blas()
    return "blas=%s (%s)" % (kind, ", ".join(paths) or "no BLAS library mapped")


def require_fast_blas():
    """Exit with a clear message when the process runs on the reference BLAS."""
    kind, paths = loaded_blas()
    if kind in ("reference", "none"):
        sys.stderr.write(
            "peer BLAS is %s (%s): the peer would be crippled and the ratio meaningless.\n"
            "Install OpenBLAS (apt-get install libopenblas0-pthread) and check\n"
            "'update-alternatives --display libblas.so.3-x86_64-linux-gnu'.\n" % (kind, ", ".join(paths)))
        sys.exit(3)
    return kind


def blas_threads():
    """Threads the loaded OpenBLAS will use (None when it cannot be asked)."""
    import ctypes
    kind, paths = loaded_blas()
    for p in paths:
        if "openblas" in p.lower():
            try:
                lib = ctypes.CDLL(p)
                return int(lib.openblas_get_num_threads())
            except (OSError, AttributeError):
                continue
    return None


def require_threads(want, *others):
    """Exit unless the BLAS (and every other given count) uses want threads."""
    got = blas_threads()
    counts = [c for c in (got,) + others if c is not None]
    if any(c != want for c in counts):
        sys.stderr.write("peer threads %s, want %d everywhere\n" % (counts, want))
        sys.exit(3)
    return got
