"""Device-resident replay buffer of SGLD chain states (JEM's persistent contrastive divergence).

The sampler draws chain starting points with ``sample``, runs SGLD from them
and stores the results back with ``write``. Both run entirely on the buffer's
device with a fixed sequence of tensor ops whose shapes depend only on the
batch size: indices and re-initialisation decisions come from jemfast's
counter-based generator (``jemfast.ops.random_uniform`` / ``random_normal``),
whose [seed, offset] state is a device tensor advanced in place. There is no
host-side randomness, no host sync and no Python loop over the batch, so the
draw can be captured into a CUDA graph with the rest of the chain and every
replay draws fresh values.

Layout: ``storage`` is (size, *sample_shape). With ``n_classes`` set the rows
are split into n_classes equal partitions; class c owns rows
[c * size / n_classes, (c + 1) * size / n_classes), and conditional draws stay
inside the requested class's partition.

Fresh (re-initialised) rows come from one of

* ``"uniform"``: U[-1, 1), as in JEM;
* ``"normal"``: N(0, 1), which suits mean/variance-normalised filter banks;
* ``"class_gaussian"``: JEM++'s informative initialisation, N(mu_c, diag(sigma_c^2))
  with per-class mean and standard deviation estimated by ``fit_init`` (a
  diagonal covariance only: a full covariance of a 32 x 192 log-Mel chunk would
  be a 6144 x 6144 matrix per class). A partitioned row uses its partition's
  class; without partitions each fresh row uses a class drawn uniformly at
  random on the device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from jemfast._checks import check_choice, check_int, check_number
from jemfast.cuda_graphs import attribute_key
from jemfast.ops import make_rng_state, random_normal, random_uniform
from jemfast.sampling.choices import INIT_CHOICES

logger = logging.getLogger(__name__)

__all__ = ["ReplayBuffer", "INIT_CHOICES", "STD_FLOOR"]

# Lower bound on the fitted per-class standard deviations: feature dimensions
# that are constant within a class (padding, silent frames) would otherwise get
# sigma = 0 and every fresh chain would start exactly at the class mean there.
STD_FLOOR = 1e-3
_STATE_FORMAT = 1
# Rows re-initialised per chunk by reset(), bounding the temporary memory of a
# full-buffer refill (10000 x 32 x 192 floats would otherwise be allocated twice).
_RESET_CHUNK_ROWS = 1024


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class ReplayBuffer:
    """Replay buffer of SGLD samples that lives on one device.

    Args:
        sample_shape: shape of one sample, e.g. (1, 32, 192) for a log-Mel chunk.
        size: number of stored samples (10000 in JEM and the paper).
        n_classes: if set, split the rows into n_classes equal class partitions
            (size must be divisible by n_classes) and allow conditional draws.
        init: distribution of fresh rows: "uniform" (U[-1, 1)), "normal" (N(0, 1))
            or "class_gaussian" (per-class diagonal Gaussian; call ``fit_init``
            before the first ``sample``).
        reinit_freq: probability in [0, 1] that a drawn row is replaced by a fresh one.
        device: where the buffer lives; None picks CUDA when available, else CPU.
        dtype: floating dtype of the stored samples.
        seed: seed (any int64) of the buffer's random stream; None draws one from
            torch's default generator (so ``torch.manual_seed`` makes it reproducible).

    Attributes:
        storage: (size, *sample_shape) tensor of stored samples.
        rng_state: int64 device tensor [seed, offset] of the counter-based generator.
        init_mean, init_std: (K, *sample_shape) float32 class Gaussians fitted by
            ``fit_init`` (K = n_classes, or 1 for a single Gaussian), or None.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        size: int = 10000,
        n_classes: int | None = None,
        init: str = "uniform",
        reinit_freq: float = 0.05,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
    ) -> None:
        if isinstance(sample_shape, int) or not isinstance(sample_shape, (Sequence, torch.Size)):
            raise TypeError(f"sample_shape must be a sequence of ints, got {sample_shape!r}")
        shape = tuple(
            check_int(f"sample_shape[{i}]", d, minimum=1, type_error=TypeError) for i, d in enumerate(sample_shape)
        )
        size = check_int("size", size, minimum=1, type_error=TypeError)
        if n_classes is not None:
            n_classes = check_int("n_classes", n_classes, minimum=1, type_error=TypeError)
            if size % n_classes != 0:
                raise ValueError(
                    f"size={size} must be divisible by n_classes={n_classes} to split the buffer into "
                    f"equal class partitions (e.g. size={size - size % n_classes or n_classes})"
                )
        init = check_choice("init", init, INIT_CHOICES)
        reinit_freq = check_number("reinit_freq", reinit_freq, minimum=0, maximum=1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")

        self.sample_shape: tuple[int, ...] = shape
        self.size = size
        self.n_classes = n_classes
        self.init = init
        self.reinit_freq = float(reinit_freq)
        self.device = _resolve_device(device)
        self.dtype = dtype
        self.rng_state = make_rng_state(seed, self.device)
        self.storage = torch.empty((size, *shape), dtype=dtype, device=self.device)
        self.init_mean: torch.Tensor | None = None
        self.init_std: torch.Tensor | None = None
        # False only for a class_gaussian buffer whose Gaussians are not fitted yet.
        self.filled = False
        if init != "class_gaussian":
            self.reset()

    def capture_key(self) -> tuple:
        """What a CUDA graph that draws from and writes to this buffer depends on.

        Every attribute (storage and random state by address, settings by value): a
        replaced storage or new init statistics make captured chains re-capture
        (:mod:`jemfast.cuda_graphs`).
        """
        return attribute_key(self)

    # ------------------------------------------------------------------ layout
    @property
    def partition_size(self) -> int:
        """Rows per class partition (the whole buffer when unpartitioned)."""
        return self.size // self.n_classes if self.n_classes else self.size

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(sample_shape={self.sample_shape}, size={self.size}, n_classes={self.n_classes}, "
            f"init={self.init!r}, reinit_freq={self.reinit_freq}, device={self.device}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------ randomness
    def reseed(self, seed: int) -> None:
        """Restart the buffer's random stream at ``seed`` (in place, so captured graphs follow)."""
        self.rng_state.copy_(make_rng_state(check_int("seed", seed, type_error=TypeError), self.device))

    def _fresh(self, n_rows: int, classes: torch.Tensor | None) -> torch.Tensor:
        """(n_rows, *sample_shape) fresh samples in the buffer's dtype.

        ``classes`` (n_rows,) int64 picks each row's Gaussian under class_gaussian;
        None draws a class per row uniformly (on the device).
        """
        shape = (n_rows, *self.sample_shape)
        if self.init == "uniform":
            fresh = random_uniform(self.rng_state, shape) * 2.0 - 1.0
        elif self.init == "normal":
            fresh = random_normal(self.rng_state, shape)
        else:
            if self.init_mean is None or self.init_std is None:
                raise RuntimeError("init='class_gaussian' needs the class Gaussians: call fit_init(batches) first")
            n_gaussians = self.init_mean.shape[0]
            if n_gaussians == 1:
                mean, std = self.init_mean, self.init_std
            else:
                if classes is None:
                    classes = self._uniform_index(n_rows, n_gaussians)
                mean = self.init_mean.index_select(0, classes)
                std = self.init_std.index_select(0, classes)
            fresh = torch.addcmul(mean, std, random_normal(self.rng_state, shape))
        return fresh.to(self.dtype)

    def _uniform_index(self, n: int, high: int) -> torch.Tensor:
        """(n,) int64 indices uniform on {0, ..., high - 1}, drawn on the device."""
        u = random_uniform(self.rng_state, (n,))
        # float32 u has 24 bits, so this is uniform up to 2^-24 relative bias;
        # the clamp guards against u * high rounding up to high.
        return (u * high).to(torch.int64).clamp_(max=high - 1)

    def _row_classes(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Class owning each row (partitioned buffers), else None."""
        if self.n_classes is None:
            return None
        return torch.div(rows, self.partition_size, rounding_mode="floor")

    def reset(self) -> None:
        """Re-initialise every row from the init distribution (the partition's class under class_gaussian)."""
        if self.init == "class_gaussian" and self.init_mean is None:
            raise RuntimeError("init='class_gaussian' needs the class Gaussians: call fit_init(batches) first")
        for start in range(0, self.size, _RESET_CHUNK_ROWS):
            stop = min(start + _RESET_CHUNK_ROWS, self.size)
            rows = torch.arange(start, stop, device=self.device)
            self.storage[start:stop] = self._fresh(stop - start, self._row_classes(rows))
        self.filled = True

    # ------------------------------------------------------------ draw/write
    def sample(self, batch_size: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw chain starting points.

        Args:
            batch_size: B, number of rows to draw.
            y: optional (B,) int64 labels on the buffer's device; row j is drawn
                uniformly from y[j]'s partition (needs n_classes). Without y,
                rows are drawn uniformly from the whole buffer.

        Returns:
            x0: (B, *sample_shape) new tensor (not a view of the storage) in the
                buffer's dtype; each row is, with probability reinit_freq, a
                fresh draw from the init distribution instead of the stored row.
            idx: (B,) int64 row indices, to pass to ``write`` with the chains' results.

        Label values are range-checked here only for CPU tensors (free there);
        on CUDA an out-of-range label makes the gather fail with a device-side
        index error, since a host-side check would need a sync.
        """
        batch_size = check_int("batch_size", batch_size, minimum=1, type_error=TypeError)
        if self.init == "class_gaussian" and self.init_mean is None:
            raise RuntimeError("init='class_gaussian' needs the class Gaussians: call fit_init(batches) first")
        if y is None:
            idx = self._uniform_index(batch_size, self.size)
        else:
            if self.n_classes is None:
                raise ValueError("conditional sample(batch_size, y) needs a buffer built with n_classes")
            self._check_index_tensor("y", y, batch_size, self.n_classes)
            idx = y * self.partition_size + self._uniform_index(batch_size, self.partition_size)
        # index_select (unlike x[idx]) rejects negative indices instead of wrapping them.
        stored = self.storage.index_select(0, idx)
        reinit = random_uniform(self.rng_state, (batch_size,)) < self.reinit_freq
        classes = y if y is not None else self._row_classes(idx)
        fresh = self._fresh(batch_size, classes)
        mask = reinit.view(batch_size, *([1] * len(self.sample_shape)))
        return torch.where(mask, fresh, stored), idx

    def write(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        """Store samples x, (len(idx), *sample_shape), into rows idx, (B,) int64, of the buffer.

        x is detached and cast to the buffer's dtype. Rows repeated in idx keep
        one of their values (unspecified which).
        """
        self._check_index_tensor("idx", idx, None, self.size)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        expected = (idx.shape[0], *self.sample_shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected {expected} (len(idx), *sample_shape)")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device}, expected the buffer's device {self.device}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        self.storage.index_copy_(0, idx, x.detach().to(self.dtype))

    def _check_index_tensor(self, name: str, t: Any, length: int | None, high: int) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of int64, got {type(t).__name__}")
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must have dtype torch.int64, got {t.dtype}")
        if t.dim() != 1 or (length is not None and t.shape[0] != length):
            want = f"({length},)" if length is not None else "(B,)"
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
        if t.device != self.device:
            raise ValueError(f"{name} is on {t.device}, expected the buffer's device {self.device}")
        # Value checks need the data on the host: free on CPU, a sync on CUDA
        # (which would also break graph capture), so CUDA relies on the
        # device-side bounds checks of index_select / index_copy_.
        if t.device.type == "cpu" and t.numel() > 0:
            low_value, high_value = int(t.min()), int(t.max())
            if low_value < 0 or high_value >= high:
                bad = low_value if low_value < 0 else high_value
                raise ValueError(f"{name} contains {bad}, expected values in [0, {high})")

    # ------------------------------------------------------------- init fit
    def fit_init(self, batches: Iterable[Any], n_classes: int | None = None) -> None:
        """Estimate the per-class Gaussians of the class_gaussian init from data, streaming.

        Args:
            batches: iterable of (x, y) pairs, x (B, *sample_shape) floating and
                y (B,) integer labels, or of x tensors alone for a single
                Gaussian shared by all classes. Any number of batches; per-class
                sums and sums of squares accumulate in float64 on the buffer's device.
            n_classes: number of classes when the buffer has no partitions
                (default: the buffer's n_classes, else the largest label + 1).

        Stores ``init_mean`` and ``init_std`` ((K, *sample_shape) float32,
        population std clamped below by STD_FLOOR). When init is
        "class_gaussian" every row is then re-initialised from them. Raises
        ValueError on empty data, inconsistent batches or classes without data;
        nothing changes on error.
        """
        known = self.n_classes
        if n_classes is not None:
            n_classes = check_int("n_classes", n_classes, minimum=1, type_error=TypeError)
            if known is not None and n_classes != known:
                raise ValueError(f"n_classes={n_classes} contradicts the buffer's n_classes={known}")
            known = n_classes
        sample_dims = math.prod(self.sample_shape)
        sums = sumsq = counts = None
        labelled: bool | None = None
        for i, batch in enumerate(batches):
            if isinstance(batch, (tuple, list)):
                if len(batch) != 2:
                    raise ValueError(f"batch {i} has {len(batch)} items, expected (x, y) or x alone")
                x, y = batch
            else:
                x, y = batch, None
            if labelled is None:
                labelled = y is not None
            elif labelled != (y is not None):
                raise ValueError(f"batch {i} mixes labelled and unlabelled batches; use one kind throughout")
            x = self._check_fit_x(f"batch {i}", x)
            if y is None:
                y = torch.zeros(x.shape[0], dtype=torch.int64, device=self.device)
            else:
                y = self._check_fit_y(f"batch {i}", y, x.shape[0], known)
            n_needed = known if (labelled and known is not None) else int(y.max()) + 1 if y.numel() else 1
            if sums is None:
                sums = torch.zeros(n_needed, sample_dims, dtype=torch.float64, device=self.device)
                sumsq = torch.zeros_like(sums)
                counts = torch.zeros(n_needed, dtype=torch.int64, device=self.device)
            elif n_needed > sums.shape[0]:
                grow = n_needed - sums.shape[0]
                sums = torch.cat([sums, sums.new_zeros(grow, sample_dims)])
                sumsq = torch.cat([sumsq, sumsq.new_zeros(grow, sample_dims)])
                counts = torch.cat([counts, counts.new_zeros(grow)])
            flat = x.reshape(x.shape[0], sample_dims).to(torch.float64)
            sums.index_add_(0, y, flat)
            sumsq.index_add_(0, y, flat * flat)
            counts += torch.bincount(y, minlength=sums.shape[0])
        if sums is None:
            raise ValueError("fit_init got no batches; expected at least one (x, y) or x batch")
        if labelled and known is not None and sums.shape[0] < known:
            pad = known - sums.shape[0]
            sums = torch.cat([sums, sums.new_zeros(pad, sample_dims)])
            sumsq = torch.cat([sumsq, sumsq.new_zeros(pad, sample_dims)])
            counts = torch.cat([counts, counts.new_zeros(pad)])
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"fit_init saw no samples of classes {missing}; every class needs data")
        n = counts.to(torch.float64).unsqueeze(1)
        mean = sums / n
        var = (sumsq / n - mean * mean).clamp_(min=0.0)
        std = var.sqrt().clamp_(min=STD_FLOOR)
        shape = (sums.shape[0], *self.sample_shape)
        self._set_init_stats(mean.to(torch.float32).view(shape), std.to(torch.float32).view(shape))
        logger.info("fitted %d init Gaussian(s) on %d samples", shape[0], int(counts.sum()))
        if self.init == "class_gaussian":
            self.reset()

    def init_from_tensor(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Fill every row with a data sample (chains then start at real inputs).

        Args:
            x: (N, *sample_shape) floating data.
            y: (N,) integer labels; required for a partitioned buffer, whose
                partition c is filled with class-c samples only.

        Rows pick samples uniformly at random with replacement (drawn from the
        buffer's stream). A setup-time routine: it may sync with the host.
        Raises ValueError when a partition's class has no samples; nothing
        changes on error.
        """
        x = self._check_fit_x("init_from_tensor", x)
        if self.n_classes is None:
            if y is not None:
                self._check_fit_y("init_from_tensor", y, x.shape[0], None)
            picks = self._uniform_index(self.size, x.shape[0])
        else:
            if y is None:
                raise ValueError(f"a buffer with n_classes={self.n_classes} needs labels y to fill its partitions")
            y = self._check_fit_y("init_from_tensor", y, x.shape[0], self.n_classes)
            counts = torch.bincount(y, minlength=self.n_classes)
            missing = (counts == 0).nonzero().flatten().tolist()
            if missing:
                raise ValueError(f"init_from_tensor got no samples of classes {missing}; every partition needs data")
            # Members of each class, contiguous after a stable sort by label.
            members = torch.argsort(y, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            row_class = self._row_classes(torch.arange(self.size, device=self.device))
            within = random_uniform(self.rng_state, (self.size,)) * counts[row_class]
            within = within.to(torch.int64).minimum(counts[row_class] - 1)
            picks = members[starts[row_class] + within]
        self.storage.copy_(x.index_select(0, picks).to(self.dtype))
        self.filled = True

    def _check_fit_x(self, where: str, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{where}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 1 + len(self.sample_shape) or tuple(x.shape[1:]) != self.sample_shape or x.shape[0] == 0:
            raise ValueError(f"{where}: x has shape {tuple(x.shape)}, expected (B >= 1, *{self.sample_shape})")
        if not x.is_floating_point():
            raise TypeError(f"{where}: x must be floating, got dtype {x.dtype}")
        return x.to(self.device)

    def _check_fit_y(self, where: str, y: Any, batch: int, known: int | None) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"{where}: y must be an integer torch.Tensor, got {getattr(y, 'dtype', type(y).__name__)}")
        if tuple(y.shape) != (batch,):
            raise ValueError(f"{where}: y has shape {tuple(y.shape)}, expected ({batch},)")
        y = y.to(device=self.device, dtype=torch.int64)
        low, high = int(y.min()), int(y.max())
        if low < 0 or (known is not None and high >= known):
            bad = low if low < 0 else high
            limit = f"[0, {known})" if known is not None else ">= 0"
            raise ValueError(f"{where}: label {bad} is out of range, expected {limit}")
        if self.n_classes is None and known is None and high >= 1 << 16:
            raise ValueError(f"{where}: label {high} is implausibly large; pass n_classes to fit_init")
        return y

    def _set_init_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        # Copy into existing tensors where the shape allows, so a CUDA graph
        # captured after an earlier fit keeps reading the current statistics.
        if self.init_mean is not None and self.init_mean.shape == mean.shape:
            self.init_mean.copy_(mean)
            self.init_std.copy_(std)
        else:
            self.init_mean, self.init_std = mean.clone(), std.clone()

    # ----------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """Contents, init statistics, RNG state and configuration as tensors and plain values.

        The tensors are copies (later sampling does not change a saved state),
        and the dict loads with ``torch.load(..., weights_only=True)``.
        """
        return {
            "format": _STATE_FORMAT,
            "sample_shape": list(self.sample_shape),
            "size": self.size,
            "n_classes": self.n_classes,
            "init": self.init,
            "reinit_freq": self.reinit_freq,
            "dtype": str(self.dtype).replace("torch.", ""),
            "filled": self.filled,
            "storage": self.storage.clone(),
            "rng_state": self.rng_state.clone(),
            "init_mean": None if self.init_mean is None else self.init_mean.clone(),
            "init_std": None if self.init_std is None else self.init_std.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the configuration must match this buffer's.

        Everything is validated before anything changes. Tensors are copied in
        place (storage and rng_state keep their identity, so CUDA graphs that
        captured them stay valid). reinit_freq is taken from the state.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from ReplayBuffer.state_dict(), got {type(state).__name__}")
        required = (
            "format", "sample_shape", "size", "n_classes", "init", "reinit_freq", "filled",
            "storage", "rng_state", "init_mean", "init_std",
        )  # fmt: skip
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"buffer state is missing keys {missing}")
        if state["format"] != _STATE_FORMAT:
            raise ValueError(f"buffer state has format {state['format']!r}, expected {_STATE_FORMAT}")
        config = (
            ("sample_shape", list(self.sample_shape)), ("size", self.size),
            ("n_classes", self.n_classes), ("init", self.init),
        )  # fmt: skip
        for key, mine in config:
            theirs = list(state[key]) if key == "sample_shape" and state[key] is not None else state[key]
            if theirs != mine:
                raise ValueError(f"buffer state has {key}={state[key]!r}, but this buffer has {key}={mine!r}")
        reinit_freq = check_number("buffer state's reinit_freq", state["reinit_freq"], minimum=0, maximum=1)
        storage, rng_state = state["storage"], state["rng_state"]
        self._check_state_tensor("storage", storage, tuple(self.storage.shape), floating=True)
        self._check_state_tensor("rng_state", rng_state, tuple(self.rng_state.shape), floating=False)
        if rng_state.dtype != self.rng_state.dtype:
            raise ValueError(f"buffer state rng_state has dtype {rng_state.dtype}, expected {self.rng_state.dtype}")
        mean, std = state["init_mean"], state["init_std"]
        if (mean is None) != (std is None):
            raise ValueError("buffer state must hold both init_mean and init_std, or neither")
        if mean is not None:
            n_gaussians = mean.shape[0] if isinstance(mean, torch.Tensor) and mean.dim() > 0 else 0
            if n_gaussians < 1 or (self.n_classes is not None and n_gaussians not in (1, self.n_classes)):
                raise ValueError(
                    f"buffer state init_mean holds {n_gaussians} Gaussians, expected 1 or n_classes={self.n_classes}"
                )
            stats_shape = (n_gaussians, *self.sample_shape)
            self._check_state_tensor("init_mean", mean, stats_shape, floating=True)
            self._check_state_tensor("init_std", std, stats_shape, floating=True)
        filled = bool(state["filled"])

        self.storage.copy_(storage)
        self.rng_state.copy_(rng_state)
        if mean is None:
            self.init_mean = self.init_std = None
        else:
            self._set_init_stats(mean.to(self.device, torch.float32), std.to(self.device, torch.float32))
        self.reinit_freq = float(reinit_freq)
        self.filled = filled

    @staticmethod
    def _check_state_tensor(name: str, t: Any, shape: tuple[int, ...], floating: bool) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"buffer state {name} must be a tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"buffer state {name} has shape {tuple(t.shape)}, expected {shape}")
        if floating and not t.is_floating_point():
            raise ValueError(f"buffer state {name} has dtype {t.dtype}, expected a floating dtype")
