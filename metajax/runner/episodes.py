"""Fixed episode sets: export a protocol's sampled episodes as a manifest of PNGs, evaluate a run on one.

A manifest is a JSON file listing, per episode, the support and query
images (paths relative to the manifest) with their labels; see
``docs/episodes.md``. Images are stored as the dataset publishes them
(Omniglot: 8-bit gray, black ink on white) and are preprocessed by the run's
own preprocessing when evaluated, so a user's episodes of any N, K and image
size are scored exactly as the training data was prepared. Exported images
are checked to read back to the very arrays the sampler produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from metajax.config import apply_overrides, experiment_config
from metajax.core.batching import batch_tasks
from metajax.core.tasks import Split, Task, task_keys
from metajax.data import images as image_lib
from metajax.errors import ConfigError, DataError
from metajax.registry import get
from metajax.runner import metrics as metrics_file
from metajax.runner.evaluate import host_eval_tasks, split_keys, summarize, test_steps
from metajax.runner.load import load_run
from metajax.runner.train import prepare_config

FORMAT, VERSION = "metajax-episodes", 1


class ImageCodec(NamedTuple):
    """How a dataset's episode arrays map to published-style PNG pixels and back.

    Attributes:
      to_pixels: ``float32 (h, w, c)`` as sampled -> ``uint8 (h, w, c)`` in the
        dataset's published convention.
      from_pixels: decoded ``uint8 (h, w, c)`` of any size -> ``float32
        (size, size, c)`` exactly as the run's training data was preprocessed.
      mode: PIL mode to decode with (``"L"`` gray, ``"RGB"``).
      convention: one line for the manifest.
    """

    to_pixels: Callable[[np.ndarray, dict], np.ndarray]
    from_pixels: Callable[[np.ndarray, dict], np.ndarray]
    mode: str
    convention: str


@jax.jit
def _as_sampled(pixels: np.ndarray) -> jax.Array:
    """``uint8 -> float32 / 255`` computed as the on-device sampler does.

    XLA may divide by multiplying with the reciprocal, which differs from
    numpy's division in the last bit; doing it on device keeps the arrays equal.
    """
    return pixels.astype(jnp.float32) / 255.0


def _omniglot_codec() -> ImageCodec:
    from metajax.data import omniglot

    def to_pixels(x: np.ndarray, data_cfg: dict) -> np.ndarray:
        return 255 - np.round(np.asarray(x) * 255.0).astype(np.uint8)  # ink back to 0, as published

    def from_pixels(pixels: np.ndarray, data_cfg: dict) -> np.ndarray:
        return _as_sampled(omniglot.preprocess(pixels, data_cfg.get("image_size", 28)))

    return ImageCodec(
        to_pixels,
        from_pixels,
        "L",
        "8-bit gray PNG, black ink (0) on white (255), as Omniglot is published; evaluation inverts, resizes "
        "to the run's image_size (Lanczos) and divides by 255, like the loader",
    )


def _rgb_codec(default_size: int | None) -> Callable[[], ImageCodec]:
    """Datasets stored as 8-bit RGB and sampled as ``uint8 / 255``: miniImageNet, tieredImageNet, CIFAR-FS, FC100."""

    def to_pixels(x: np.ndarray, data_cfg: dict) -> np.ndarray:
        return np.round(np.asarray(x) * 255.0).astype(np.uint8)

    def from_pixels(pixels: np.ndarray, data_cfg: dict) -> np.ndarray:
        size = data_cfg.get("image_size", default_size)
        return _as_sampled(image_lib.resize(pixels, size, data_cfg.get("resample", "bilinear")))

    return lambda: ImageCodec(
        to_pixels,
        from_pixels,
        "RGB",
        "8-bit RGB PNG; evaluation resizes to the run's image_size with its data.resample filter and divides "
        "by 255, like the loader",
    )


CODECS: dict[str, Callable[[], ImageCodec]] = {
    "omniglot": _omniglot_codec,
    "miniimagenet": _rgb_codec(84),
    "tieredimagenet": _rgb_codec(84),
    "cifarfs": _rgb_codec(None),
    "fc100": _rgb_codec(None),
}


def codec_for(data_cfg: dict) -> ImageCodec:
    """The :class:`ImageCodec` of a run's dataset; raises a one-line error for datasets without one."""
    name = data_cfg.get("name")
    if name not in CODECS:
        raise ConfigError(
            f"episodes: no image codec for dataset {name!r}; manifests support {', '.join(sorted(CODECS))} "
            "(add one to metajax.runner.episodes.CODECS)."
        )
    return CODECS[name]()


def episode_keys(seed: int, num: int, split: str = "test") -> jax.Array:
    """The keys of a run's ``split`` evaluation episodes, as :func:`metajax.runner.evaluate.test_results` draws them."""
    return task_keys(split_keys(seed)[split], num)


# ---- export


def export_episodes(
    name: str,
    out_dir: str | Path,
    *,
    episodes: int = 600,
    split: str = "test",
    overrides: Sequence[str] = (),
) -> Path:
    """Writes the first ``episodes`` sampled ``split`` episodes of experiment ``name`` as a manifest.

    With ``split="test"`` these are the very episodes a run of ``name`` is
    tested on (same seed, same keys), so ``metajax eval RUN --episodes`` on
    the manifest reproduces the run's sampled test evaluation.

    Returns:
      The path of ``manifest.json`` in ``out_dir``.

    Raises:
      DataError: an exported image would not read back to the sampled array.
    """
    if split not in ("train", "val", "test"):
        raise ConfigError(f"episodes export: split={split!r}; use train, val or test.")
    if not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes export: --episodes must be a positive int, got {episodes!r}.")
    config = prepare_config(apply_overrides(experiment_config(name), overrides))
    data_cfg = config["data"]
    codec = codec_for(data_cfg)
    source = get("datasets", data_cfg["name"])(**{k: v for k, v in data_cfg.items() if k != "name"})
    if source.on_host:  # the first tasks of the split's evaluation stream, as test_results draws them
        tasks = host_eval_tasks(source, config["seed"], split, range(episodes))
    else:
        sample = jax.jit(
            lambda data, keys: jax.vmap(lambda k: source.sample(data, jax.random.split(k)[0], split))(keys)
        )
        tasks = jax.device_get(sample(source.init(), episode_keys(config["seed"], episodes, split)))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(episodes):
        folder = f"episode_{i:04d}"
        (out_dir / folder).mkdir(exist_ok=True)
        record: dict[str, Any] = {"id": i}
        for part in ("support", "query"):
            x, y = getattr(tasks, part).x[i], getattr(tasks, part).y[i]
            items = []
            for j in range(x.shape[0]):
                relative = f"{folder}/{part}_{j:03d}.png"
                _write_png(out_dir / relative, x[j], codec, data_cfg)
                items.append({"image": relative, "label": int(y[j])})
            record[part] = items
        record["ways"] = len({item["label"] for item in record["support"]})
        records.append(record)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "experiment": name,
        "split": split,
        "seed": config["seed"],
        "data": data_cfg,
        "images": codec.convention,
        "episodes": records,
    }
    path = out_dir / "manifest.json"
    metrics_file.write_json(path, manifest)
    return path


def _write_png(path: Path, x: np.ndarray, codec: ImageCodec, data_cfg: dict) -> None:
    pixels = codec.to_pixels(x, data_cfg)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, mode=codec.mode).save(path)
    back = np.asarray(codec.from_pixels(image_lib.decode_image(path.read_bytes(), codec.mode), data_cfg))
    if back.shape != x.shape or not np.array_equal(back, x):
        raise DataError(
            f"episodes export: {path} does not read back to the sampled array (8-bit PNG cannot hold it exactly); "
            "export at the training resolution of a dataset whose preprocessed pixels are 8-bit."
        )


# ---- evaluation


class Episode(NamedTuple):
    task: Task  # no task axis
    ways: int


def load_manifest(path: str | Path, data_cfg: dict, image_shape: Sequence[int]) -> list[Episode]:
    """Reads a manifest's episodes, preprocessed as the run's training data (``data_cfg``).

    Labels may be any JSON scalars; each episode's support labels are mapped
    to ``0 .. N-1`` in sorted order (integer labels ``0 .. N-1`` stay as they are).

    Raises:
      DataError: a missing or unreadable manifest or image, a query label absent from the support set.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"episodes: cannot read manifest {path} ({type(e).__name__}: {e}); see docs/episodes.md."
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("episodes"), list) or not manifest["episodes"]:
        raise DataError(f"episodes: {path} has no 'episodes' list; see docs/episodes.md for the format.")
    codec = codec_for(data_cfg)
    out = []
    for n, record in enumerate(manifest["episodes"]):
        where = f"{path} episode {record.get('id', n) if isinstance(record, dict) else n}"
        try:
            support, query = record["support"], record["query"]
            support_labels = [item["label"] for item in support]
            query_labels = [item["label"] for item in query]
        except (KeyError, TypeError):
            raise DataError(f"episodes: {where} needs 'support' and 'query' lists of {{image, label}}.") from None
        if not support or not query:
            raise DataError(f"episodes: {where} has an empty support or query set.")
        classes = sorted(set(support_labels), key=lambda v: (str(type(v)), v))
        index = {label: i for i, label in enumerate(classes)}
        missing = sorted({str(v) for v in query_labels if v not in index})
        if missing:
            raise DataError(f"episodes: {where}: query labels {', '.join(missing)} have no support image.")
        if all(isinstance(v, int) for v in classes) and classes == list(range(len(classes))):
            index = {v: v for v in classes}

        def split(items, labels):
            x = np.stack([_read_image(path.parent / item["image"], codec, data_cfg, where) for item in items])
            return Split(x, np.asarray([index[v] for v in labels], np.int32))

        task = Task(split(support, support_labels), split(query, query_labels))
        if tuple(task.support.x.shape[1:]) != tuple(image_shape):
            raise DataError(
                f"episodes: {where}: images preprocess to {task.support.x.shape[1:]} but the run was trained on "
                f"{tuple(image_shape)}; use images with {image_shape[-1]} channel(s)."
            )
        out.append(Episode(task, len(classes)))
    return out


def _read_image(path: Path, codec: ImageCodec, data_cfg: dict, where: str) -> np.ndarray:
    try:
        return np.asarray(codec.from_pixels(image_lib.decode_image(path.read_bytes(), codec.mode), data_cfg))
    except image_lib.DECODE_ERRORS as e:
        raise DataError(f"episodes: {where}: cannot read image {path} ({type(e).__name__}: {e}).") from None


def evaluate_episodes(
    run_dir: str | Path,
    manifest: str | Path,
    *,
    inner_steps: Optional[int] = None,
    which: str = "latest",
) -> dict[str, Any]:
    """Evaluates a trained run on a manifest's episodes; writes ``eval-episodes-<which>.json`` in the run.

    Episodes of equal shapes are evaluated together in chunks of the run's
    ``eval.batch_size`` with its task batching, exactly as the sampled test
    evaluation does, so a manifest exported from the run's protocol gives
    the same per-episode metrics as ``metajax eval RUN --tasks N``.

    Returns:
      ``{"pre_adaptation", "post_adaptation", "by_inner_step", "per_episode", ...}``
      like :func:`metajax.runner.evaluate.test_results`.
    """
    trained = load_run(run_dir, which=which)
    config, c = trained.config, trained.components
    learner, state = c.learner, trained.state
    steps = inner_steps if inner_steps is not None else test_steps(config, learner)
    episodes = load_manifest(manifest, config["data"], c.source.example.support.x.shape[1:])

    groups: dict[tuple, list[int]] = {}
    for i, episode in enumerate(episodes):
        shapes = tuple(leaf.shape for leaf in jax.tree_util.tree_leaves(episode.task))
        groups.setdefault(shapes, []).append(i)
    eval_keys = jax.vmap(lambda k: jax.random.split(k)[1])(episode_keys(config["seed"], len(episodes)))

    @jax.jit
    def run(state, tasks: Task, keys: jax.Array):
        one = lambda task, key: learner.evaluate(state.meta_params, state.model_state, task, key, steps)  # noqa: E731
        return batch_tasks(one, config["task_batching"])(tasks, keys)

    per_episode: list[Optional[dict]] = [None] * len(episodes)
    for indices in groups.values():
        _check_classes(learner, state, episodes[indices[0]], steps)
        tasks = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[episodes[i].task for i in indices])
        batch = min(config["eval"]["batch_size"], len(indices))
        pad = (-len(indices)) % batch
        keys = eval_keys[np.asarray(indices)]
        if pad:
            tasks = jax.tree_util.tree_map(lambda a: np.concatenate([a, a[:pad]]), tasks)
            keys = jnp.concatenate([keys, keys[:pad]])
        chunks = [
            jax.device_get(run(state, jax.tree_util.tree_map(lambda a: a[s : s + batch], tasks), keys[s : s + batch]))
            for s in range(0, len(keys), batch)
        ]
        metrics = {name: np.concatenate([ch[name] for ch in chunks])[: len(indices)] for name in chunks[0]}
        for row, i in enumerate(indices):
            per_episode[i] = {name: values[row] for name, values in metrics.items()}

    stacked = {name: np.stack([m[name] for m in per_episode]) for name in per_episode[0]}
    summary = summarize(stacked)
    post = min(learner.inner_steps, steps)
    results = {
        "experiment": config.get("experiment"),
        "manifest": str(Path(manifest).resolve()),
        "checkpoint": which,
        "step": int(state.step),
        "episodes": len(episodes),
        "ways": sorted({e.ways for e in episodes}),
        "inner_steps": {"train": learner.inner_steps, "test": steps},
        "pre_adaptation": {n: {"mean": s["mean"][0], "ci95": s["ci95"][0]} for n, s in summary.items()},
        "post_adaptation": {n: {"mean": s["mean"][post], "ci95": s["ci95"][post]} for n, s in summary.items()},
        "by_inner_step": summary,
        "per_episode": {name: values[:, -1].tolist() for name, values in stacked.items()},
    }
    metrics_file.write_json(Path(run_dir) / f"eval-episodes-{which}.json", results)
    return results


def _check_classes(learner, state, episode: Episode, steps: int) -> None:
    """Fails before compilation when the run's model cannot output this episode's classes (a fixed head)."""

    def logits(task):
        adapted = learner.adapt(state.meta_params, state.model_state, task.support, jax.random.key(0), steps)
        return learner.predict(adapted, state.model_state, task.query.x)

    width = jax.eval_shape(logits, episode.task).shape[-1]
    if width < episode.ways:
        raise DataError(
            f"episodes: an episode has {episode.ways} classes but the run's model outputs {width}; evaluate "
            f"{width}-way episodes, or train with data.ways={episode.ways} (ProtoNets takes any N)."
        )
