"""Training: the teacher on the log window with sampled negatives, then the student against it
(the distillation seed's two losses: soft targets first, then soft targets plus the hidden
representation MSE), the content fusion's block weights (:mod:`.fusion_weights`), and the
held-out hit rate all are judged by."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from streamrec.models.student_scorer import StudentScorer
from streamrec.snapshots.hot_swap import FUSION_WEIGHTS
from streamrec.training.fusion_weights import FusionFit, learn_fusion
from streamrec.training.student_towers import StudentTowers
from streamrec.training.teacher import TeacherTowers, pick_device
from streamrec.training.training_log import HISTORY, Examples, ItemContent, TrainingLog

#: progress(phase, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class TrainConfig:
    """Sizes and schedule; the defaults train on MovieLens-100K in about a minute on 2 cores."""

    history: int = HISTORY
    batch: int = 256
    #: Sampled negatives shared by a batch, drawn in proportion to clicks ** negative_power
    #: over the window's items (0: uniform; towards 1 it stops the model from winning on
    #: popularity alone, which uniform negatives reward). Off by default: on MovieLens 0.5
    #: (with id_dropout 0.25) cost held-out HR@10 (0.141 vs 0.158).
    negatives: int = 255
    negative_power: float = 0.0
    #: Share of items whose id vector is hidden in each teacher batch, so the content towers
    #: learn to stand in for it (new items have no id).
    id_dropout: float = 0.0
    #: Share of items the student sees without their id and behaviour in each batch, while
    #: the teacher sees them whole: the student learns to score items newer than the window
    #: (which have neither) from content alone.
    student_id_dropout: float = 0.3
    teacher_epochs: int = 6
    #: Epochs with the soft-target loss only, then with soft targets plus the hidden MSE.
    student_epochs: tuple[int, int] = (3, 3)
    teacher_lr: float = 2e-3
    student_lr: float = 5e-3
    temperature: float = 2.0
    #: Weight of the true click (hard label) beside the soft targets, as in Hinton et al.
    hard_weight: float = 0.2
    hidden_weight: float = 1.0
    #: Share of the window's clicks (the most recent) held out to judge the models.
    held_out: float = 0.1
    seed: int = 0
    #: None: CUDA when present, else the CPU.
    device: str | None = None
    #: CPU threads while training (None: every core).
    threads: int | None = None


@dataclass
class Window:
    """The item-side tensors of a training window: content for every item of the log, and
    id rows (1-based) for the items that had interactions before ``stop``."""

    log: TrainingLog
    content: ItemContent
    stop: int
    id_rows: np.ndarray = field(init=False)
    behaviour: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.log.item_ids)
        seen = np.zeros(n, bool)
        seen[self.log.items[:self.stop]] = True
        self.id_rows = np.zeros(n, np.int64)
        self.id_rows[seen] = np.arange(1, seen.sum() + 1)
        self.behaviour = self.log.behaviour(self.stop)

    @property
    def n_ids(self) -> int:
        return int(self.id_rows.max()) if len(self.id_rows) else 0

    @property
    def trained_items(self) -> np.ndarray:
        return np.flatnonzero(self.id_rows)

    def item_ids_by_row(self) -> list[str]:
        ids = self.log.item_ids
        return [ids[j] for j in self.trained_items[np.argsort(self.id_rows[self.trained_items])]]

    def behaviour_by_row(self) -> np.ndarray:
        out = np.zeros((self.n_ids + 1, self.behaviour.shape[1]), np.float32)
        out[self.id_rows[self.trained_items]] = self.behaviour[self.trained_items]
        return out

    @cached_property
    def first_ts(self) -> np.ndarray:
        """When each item became known: its upload, else its first interaction."""
        log = self.log
        first = np.full(len(log.item_ids), np.inf)
        np.minimum.at(first, log.items, log.ts)
        for j, item in enumerate(log.item_ids):
            up = log.uploads.get(item)
            if up is not None:
                first[j] = min(first[j], up.ts)
        return first

    def tensors(self, device: torch.device) -> _Tensors:
        """The window on ``device``, moved there once."""
        cache = self.__dict__.setdefault("_tensors", {})
        if device not in cache:
            cache[device] = _Tensors(self, device)
        return cache[device]


class _Tensors:
    """The window on the training device."""

    def __init__(self, w: Window, device: torch.device) -> None:
        c = w.content
        self.text = torch.from_numpy(c.text).to(device)
        self.image = torch.from_numpy(c.image).to(device)
        self.has_image = torch.from_numpy(c.has_image).to(device)
        self.fused = torch.from_numpy(c.fused).to(device)
        self.behaviour = torch.from_numpy(w.behaviour).to(device)
        self.ids = torch.from_numpy(w.id_rows).to(device)


def _batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for a in range(0, n, size):
        yield order[a:a + size]


def negative_pool(w: Window, power: float) -> tuple[np.ndarray, np.ndarray]:
    """The items negatives are drawn from (the window's) and their probabilities."""
    items = w.trained_items
    clicks = np.bincount(w.log.items[:w.stop][w.log.clicked[:w.stop]], minlength=len(w.id_rows))
    p = (clicks[items] + 1.0) ** power
    return items, p / p.sum()


def _sample(ex: Examples, rows: np.ndarray, pool: tuple[np.ndarray, np.ndarray], k: int, rng,
            device):
    """A batch as device tensors with its items renumbered into ``uniq``: history, positive
    and the shared negatives index into the item vectors of ``uniq`` only."""
    hist, pos, clicked = ex.history[rows], ex.positive[rows], ex.clicked[rows]
    neg = rng.choice(pool[0], size=min(k, len(pool[0])), p=pool[1])
    uniq, inv = np.unique(np.concatenate([hist[hist >= 0], pos, neg]), return_inverse=True)
    h = np.full(hist.shape, -1, np.int64)
    h[hist >= 0] = inv[: int((hist >= 0).sum())]
    p = inv[len(inv) - len(neg) - len(pos): len(inv) - len(neg)]
    n = inv[len(inv) - len(neg):]
    accidental = pos[:, None] == neg[None, :]  # a negative that is the positive
    return [torch.from_numpy(a).to(device) for a in (uniq, h, clicked, p, n, accidental)]


def _logits(user: torch.Tensor, items: torch.Tensor, p, n, accidental,
            bias: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Scores of (positive, negatives) per example; column 0 is the click."""
    pos = (user * items[p]).sum(1, keepdim=True)
    neg = user @ items[n].T
    if scale is not None:
        pos, neg = pos * scale, neg * scale
    if bias is not None:
        pos, neg = pos + bias[p].unsqueeze(1), neg + bias[n].unsqueeze(0)
    return torch.cat([pos, neg.masked_fill(accidental, -1e9)], 1)


def split_examples(w: Window, cfg: TrainConfig) -> tuple[Examples, Examples]:
    """Clicks of the window, oldest first: the first for training, the most recent
    ``held_out`` share for judging."""
    ex = w.log.examples(0, w.stop, cfg.history)
    cut = int(len(ex) * (1.0 - cfg.held_out))
    return ex.take(np.arange(cut)), ex.take(np.arange(cut, len(ex)))


def teacher_item_vectors(teacher: TeacherTowers, t: _Tensors, rows=None,
                         id_dropout: float = 0.0) -> torch.Tensor:
    sel = slice(None) if rows is None else rows
    ids = t.ids[sel]
    if id_dropout > 0:
        ids = ids.masked_fill(torch.rand(ids.shape, device=ids.device) < id_dropout, 0)
    return teacher.item_vectors(t.text[sel], t.image[sel], t.has_image[sel], ids, t.fused[sel])


class _BestEpoch:
    """Early stopping: the weights of the epoch (0: the untrained start) that scored best on
    the held-out clicks, so a round never returns a model its own training made worse.
    ``scores_of(model)`` gives the model's ``scores_for`` (see :func:`hit_rate`)."""

    def __init__(self, model: torch.nn.Module, scores_of: Callable[[torch.nn.Module], Callable],
                 held_out: Examples | None, first_ts: np.ndarray):
        self.model = model
        self.judge = (lambda m: hit_rate(scores_of(m), held_out, first_ts)) \
            if held_out is not None and len(held_out) else None
        self.best, self.state, self.epoch, self.history = -1.0, None, 0, []
        self.check(0)

    def check(self, epoch: int) -> None:
        if self.judge is None:
            return
        self.model.eval()
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        score = self.judge(self.model) if finite else -1.0
        self.history.append(round(score, 4))
        if score > self.best:
            self.best, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.train()

    def restore(self) -> torch.nn.Module:
        if self.state is not None:
            self.model.load_state_dict(self.state)
        return self.model.eval()


def train_teacher(w: Window, train: Examples, cfg: TrainConfig,
                  progress: Progress | None = None, held_out: Examples | None = None
                  ) -> TeacherTowers:
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t = w.tensors(device)
    c = w.content
    model = TeacherTowers(w.n_ids, c.text.shape[1], c.image.shape[1], history=cfg.history,
                          content_dim=c.fused.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.teacher_lr)
    pool = negative_pool(w, cfg.negative_power)
    steps = cfg.teacher_epochs * -(-len(train) // cfg.batch)
    done = 0
    best = _BestEpoch(model, lambda m: teacher_scores(m, w, cfg.device), held_out, w.first_ts)
    model.train()
    for epoch in range(cfg.teacher_epochs):
        for rows in _batches(len(train), cfg.batch, rng):
            uniq, h, hc, p, n, acc = _sample(train, rows, pool, cfg.negatives, rng, device)
            items = teacher_item_vectors(model, t, uniq, cfg.id_dropout)
            logits = _logits(model.user_vectors(items, h, hc), items, p, n, acc,
                             scale=model.log_scale.exp())
            loss = F.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long, device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if progress is not None:
                progress("teacher", done, steps)
        best.check(epoch + 1)
    model.best_epoch, model.epoch_scores = best.epoch, best.history
    return best.restore()


def distil_student(teacher: TeacherTowers, w: Window, train: Examples, cfg: TrainConfig,
                   progress: Progress | None = None, held_out: Examples | None = None
                   ) -> StudentTowers:
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed + 1)
    t = w.tensors(device)
    model = StudentTowers(w.n_ids, w.content.fused.shape[1], history=cfg.history,
                          teacher_dim=teacher.config["dim"])
    model.init_prior(w.content.fused[w.trained_items])
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.student_lr)
    pool = negative_pool(w, cfg.negative_power)
    per_epoch = -(-len(train) // cfg.batch)
    steps = sum(cfg.student_epochs) * per_epoch
    tau, done, epoch = cfg.temperature, 0, 0
    best = _BestEpoch(model, lambda m: student_scores(m, w), held_out, w.first_ts)
    model.train()
    for phase, epochs in enumerate(cfg.student_epochs):
        for _ in range(epochs):
            for rows in _batches(len(train), cfg.batch, rng):
                uniq, h, hc, p, n, acc = _sample(train, rows, pool, cfg.negatives, rng, device)
                with torch.no_grad():
                    t_items = teacher_item_vectors(teacher, t, uniq)
                    t_users = teacher.user_vectors(t_items, h, hc)
                    t_logits = _logits(t_users, t_items, p, n, acc,
                                       scale=teacher.log_scale.exp())
                ids, behaviour = t.ids[uniq], t.behaviour[uniq]
                if cfg.student_id_dropout > 0:  # as if new: content alone must match the teacher
                    hide = torch.rand(ids.shape, device=device) < cfg.student_id_dropout
                    ids = ids.masked_fill(hide, 0)
                    behaviour = behaviour.masked_fill(hide.unsqueeze(1), 0.0)
                s_items = model.item_vectors(t.fused[uniq], behaviour, ids)
                s_users = model.user_vectors(s_items, h, hc)
                s_logits = _logits(s_users, s_items, p, n, acc, model.item_bias(ids))
                soft = F.kl_div(F.log_softmax(s_logits / tau, 1), F.softmax(t_logits / tau, 1),
                                reduction="batchmean") * tau * tau
                hard = F.cross_entropy(s_logits, torch.zeros(len(rows), dtype=torch.long,
                                                             device=device))
                loss = soft + cfg.hard_weight * hard
                if phase == 1:  # the hidden representations, relative to the teacher's scale
                    loss = loss + cfg.hidden_weight * (
                        F.mse_loss(model.item_adapter(s_items), t_items)
                        / t_items.pow(2).mean().clamp(min=1e-6)
                        + F.mse_loss(model.user_adapter(s_users), t_users)
                        / t_users.pow(2).mean().clamp(min=1e-6))
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if progress is not None:
                    progress("student", done, steps)
            epoch += 1
            best.check(epoch)
    model.best_epoch, model.epoch_scores = best.epoch, best.history
    return best.restore()


def hit_rate(scores_for: Callable[[Examples], np.ndarray], ex: Examples, first_ts: np.ndarray,
             k: int = 10, batch: int = 512) -> float:
    """Share of ``ex``'s clicks whose item is in the top ``k`` of the items known by then,
    excluding the user's history. ``scores_for(rows)`` gives examples x items."""
    if len(ex) == 0:
        return 0.0
    hits = 0
    for a in range(0, len(ex), batch):
        part = ex.take(np.arange(a, min(a + batch, len(ex))))
        S = np.array(scores_for(part), np.float64)
        S[first_ts[None, :] > part.ts[:, None]] = -np.inf
        r, c = np.nonzero(part.history >= 0)
        S[r, part.history[r, c]] = -np.inf
        target = S[np.arange(len(part)), part.positive]
        # Ties count against the click: a model with no opinion (all equal) scores no hit.
        hits += int(((S >= target[:, None]).sum(1) - 1 < k).sum())
    return hits / len(ex)


def student_scores(student: StudentTowers, w: Window):
    """``scores_for`` of the student's torch towers over every item of the log."""
    device = next(student.parameters()).device
    t = w.tensors(device)
    with torch.no_grad():
        items = student.item_vectors(t.fused, t.behaviour, t.ids)
        bias = student.item_bias(t.ids)

    def scores_for(ex: Examples) -> np.ndarray:
        with torch.no_grad():
            h, c = (torch.from_numpy(a).to(device) for a in (ex.history, ex.clicked))
            return (student.user_vectors(items, h, c) @ items.T + bias).cpu().numpy()
    return scores_for


def teacher_scores(teacher: TeacherTowers, w: Window, device=None):
    """``scores_for`` of the teacher over every item of the log."""
    t = w.tensors(pick_device(device))
    with torch.no_grad():
        items = teacher_item_vectors(teacher, t)

    def scores_for(ex: Examples) -> np.ndarray:
        with torch.no_grad():
            h, c = (torch.from_numpy(a).to(items.device) for a in (ex.history, ex.clicked))
            return (teacher.user_vectors(items, h, c) @ items.T).cpu().numpy()
    return scores_for


def scorer_scores(scorer: StudentScorer, w: Window):
    """``scores_for`` of a served student (numpy) over every item of the log."""
    V, b = scorer.item_vectors(w.content.fused, scorer.rows(w.log.item_ids))

    def scores_for(ex: Examples) -> np.ndarray:
        return scorer.user_vectors(V, ex.history, ex.clicked) @ V.T + b
    return scores_for


@dataclass
class Trained:
    """A round's models and their held-out hit rates."""

    teacher: TeacherTowers
    student: StudentTowers
    window: Window
    scores: dict[str, float]
    seconds: dict[str, float]
    examples: int
    #: The window's most recent clicks, not trained on: what a new student is judged by.
    held_out: Examples
    #: The content fusion's block weights: learned, chosen (served with the student) and
    #: judged; None: not fitted (the fixed fusion).
    fusion: FusionFit | None = None

    def student_snapshot(self, quantise: bool = False):
        """Tensors and metadata of the student, with the fusion weights workers serve with it."""
        tensors, meta = self.student.snapshot(self.window.item_ids_by_row(),
                                              self.window.behaviour_by_row(), quantise)
        if self.fusion is not None:
            meta[FUSION_WEIGHTS] = self.fusion.chosen.to_json()
        return tensors, meta


def train_models(log: TrainingLog, content: ItemContent, stop: int | None = None,
                 cfg: TrainConfig | None = None, progress: Progress | None = None) -> Trained:
    """Teacher, then student, on the interactions before ``stop``; both judged on the
    window's most recent clicks (held out from training)."""
    cfg = cfg or TrainConfig()
    threads = torch.get_num_threads()
    # Training gets every core (the CLI pins BLAS to one thread for the streaming worker).
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    try:
        return _train_models(log, content, stop, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _train_models(log: TrainingLog, content: ItemContent, stop: int | None, cfg: TrainConfig,
                  progress: Progress | None) -> Trained:
    stop = len(log) if stop is None else stop
    w = Window(log, content, stop)
    train, held = split_examples(w, cfg)
    if len(train) < cfg.batch // 4:
        raise ValueError(f"only {len(train)} training clicks in the window: too few to train on")
    seconds = {}
    t0 = time.perf_counter()
    teacher = train_teacher(w, train, cfg, progress, held)
    seconds["teacher"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    student = distil_student(teacher, w, train, cfg, progress, held)
    seconds["student"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fusion = learn_fusion(log, content.fused, stop, train, held,
                          lambda scores_for: hit_rate(scores_for, held, w.first_ts), cfg.seed)
    seconds["fusion"] = time.perf_counter() - t0
    trained = Trained(teacher, student, w, {}, seconds, len(train), held, fusion)
    trained.scores["teacher_hr_at_10"] = hit_rate(teacher_scores(teacher, w, cfg.device), held,
                                                  w.first_ts)
    for name, q in (("student_hr_at_10", False), ("student_int8_hr_at_10", True)):
        scorer = StudentScorer(*trained.student_snapshot(q))
        trained.scores[name] = hit_rate(scorer_scores(scorer, w), held, w.first_ts)
    trained.scores["content_fixed_hr_at_10"] = fusion.fixed_hr
    trained.scores["content_learned_hr_at_10"] = fusion.learned_hr
    trained.scores["held_out_clicks"] = len(held)
    trained.scores["teacher_best_epoch"] = teacher.best_epoch
    trained.scores["student_best_epoch"] = student.best_epoch
    return trained
