"""nas.train: strategies, the training loop, checkpoints and exact resume (tiny supernet, CPU)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from train_tiny import TinyNoBatchNorm, TinySupernet, tiny_data

from nas.evaluation import evaluate_subnet
from nas.train import STRATEGIES, load_weights, make_strategy, train_supernet
from nas.train.checkpoint import CHECKPOINT, WEIGHTS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny nets: intra-op threads only add synchronisation (and spin badly on a shared, loaded CPU).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = {"batch_size": 32, "progress": False, "checkpoint_every": 3, "channels_last": False, "device": "cpu"}


def _weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_registry_and_strategy_tasks():
    assert sorted(STRATEGIES) == ["delayed", "progressive", "sandwich", "uniform"]
    net = TinySupernet()
    rng = np.random.default_rng(0)
    tasks = make_strategy("sandwich", net, 10, num_random=2).tasks(0, rng)
    assert [t.teacher for t in tasks] == [True, False, False, False]
    assert tasks[0].config == net.space.max() and tasks[1].config == net.space.min()
    assert len(make_strategy("uniform", net, 10).tasks(0, rng)) == 1
    prog = make_strategy("progressive", net, 100)
    assert [prog.phase(s) for s in (0, 30, 60, 90)] == ["full", "kernel", "depth", "width"]
    # in the kernel phase only the kernel varies
    for t in prog.tasks(30, rng):
        assert {k for k in net.space.names if t.config[k] != net.space.max()[k]} <= {"kernel"}
    delayed = make_strategy("delayed", net, 100, delay=0.5, ramp=0.2)
    assert len(delayed.tasks(10, rng)) == 1 and delayed.ramp_weight(49) == 0.0
    assert 0 < delayed.ramp_weight(55) < 1 and delayed.ramp_weight(90) == 1.0
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        make_strategy("bogus", net, 10)


@pytest.mark.parametrize(
    ("fractions", "phases"),
    [
        ((0.1, 0.2, 0.3, 0.4), "fkkdddwwww"),  # 0.1 + 0.2 sums to 3.0000000000000004 steps of 10
        ((0.7, 0.1, 0.1, 0.1), "fffffffkdw"),  # 7.000000000000001: the kernel phase got no step at all
        (None, "fffkkdddww"),  # equal shares of 10 steps: 2.5 per phase, a phase runs while step < its end
    ],
)
def test_progressive_phases_get_the_steps_their_fractions_give(fractions, phases):
    strategy = make_strategy("progressive", TinySupernet(), 10, fractions=fractions)
    assert "".join(strategy.phase(step)[0] for step in range(10)) == phases


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ({"kernels": ("kernel",)}, "'kernels' is not a kind; use resolution, depth, kernel"),
        ({"kernel": "kernel"}, "'kernel' must list dimension names, e.g. ('kernel',)"),
        ({"kernel": ("kernal",)}, "'kernel' names 'kernal', not dimensions of space 'tiny'"),
    ],
)
def test_elastic_groups_of_a_user_supernet_are_checked(groups, fragment, monkeypatch):
    # A misspelt kind or name kept those dimensions at their max through most of a progressive run, silently.
    net = TinySupernet()
    monkeypatch.setattr(net, "elastic_groups", lambda: groups)
    for strategy in ("progressive", "sandwich"):
        with pytest.raises(ValueError, match=re.escape(f"TinySupernet.elastic_groups(): {fragment}")):
            make_strategy(strategy, net, 100)


def test_low_resolution_bias_favours_small_resolutions_for_random_subnets():
    from search_spaces import mobilenetv3

    net = mobilenetv3.supernet("small", in_channels=1)
    resolutions = list(net.space["resolution"].values)

    def counts(**options):
        strategy = make_strategy("sandwich", net, 100, num_random=4, **options)
        res = [
            t.config["resolution"]
            for s in range(150)
            for t in strategy.tasks(s, np.random.default_rng(s))[2:]
        ]
        return np.bincount([resolutions.index(r) for r in res], minlength=len(resolutions)) / len(res)

    uniform, biased = counts(), counts(low_resolution_bias=1.0)
    assert np.all(np.abs(uniform - 1 / 3) < 0.06)
    assert np.all(np.abs(biased - np.array([3, 2, 1]) / 6) < 0.06)  # weights 3:2:1, smallest first
    # max and min stay pinned; describe() records the option so a resume with another value is refused
    tasks = make_strategy("sandwich", net, 100, low_resolution_bias=2.0).tasks(0, np.random.default_rng(0))
    assert tasks[0].config == net.space.max() and tasks[1].config == net.space.min()
    assert (
        make_strategy("sandwich", net, 100, low_resolution_bias=2.0).describe()["low_resolution_bias"] == 2.0
    )
    assert "low_resolution_bias" not in make_strategy("sandwich", net, 100).describe()
    with pytest.raises(ValueError, match="low_resolution_bias"):
        make_strategy("sandwich", net, 100, low_resolution_bias=-1)


def test_attentive_sampling_draws_candidates_and_trains_the_worst():
    from nas.train.trainer import _worst_candidate

    net = TinySupernet()
    strategy = make_strategy("sandwich", net, 100, num_random=2, attentive=3)
    tasks = strategy.tasks(0, np.random.default_rng(0))
    assert [len(t.candidates) for t in tasks] == [0, 0, 3, 3]  # max and min stay pinned
    again = strategy.tasks(0, np.random.default_rng(0))  # a pure function of (step, rng): resumable
    assert [t.candidates for t in again] == [t.candidates for t in tasks]
    assert strategy.describe()["attentive"] == 3
    assert "attentive" not in make_strategy("sandwich", net, 100).describe()
    with pytest.raises(ValueError, match="attentive"):
        make_strategy("sandwich", net, 100, attentive=-1)

    # The config whose predictions are furthest from the teacher's is picked.
    x, y = torch.zeros(40, 1), torch.zeros(40, dtype=torch.long)
    teacher = torch.nn.functional.one_hot(y, 10).float()
    confidence = {"good": 8.0, "bad": 0.0, "fair": 3.0}

    def forward(config, xb):
        return torch.nn.functional.one_hot(torch.zeros(len(xb), dtype=torch.long), 10) * confidence[config]

    def loss_of(logits, soft, labels):
        assert len(logits) == len(soft) == len(labels) == 32  # probes at most 32 examples
        return -(soft * torch.log_softmax(logits, dim=1)).sum(1).mean()

    assert _worst_candidate(("good", "bad", "fair"), x, y, teacher, forward, loss_of) == "bad"
    assert _worst_candidate(("good", "fair"), x, y, teacher, forward, loss_of) == "fair"


def test_uniform_draws_the_spaces_own_sampler_and_honours_attentive():
    """``uniform`` trains one subnet drawn exactly as ``space.sample`` draws it (quantization and sparsity
    dimensions included), and ``attentive`` gives that random subnet its extra candidates as it does the
    sandwich's random slots (it was accepted, recorded in the checkpoint and silently ignored)."""
    from search_spaces import mobilenetv3

    net = mobilenetv3.supernet("small", in_channels=1, quant=True, sparsity=True)
    assert {"quant", "sparsity"} <= set(net.elastic_groups())
    plain = make_strategy("uniform", net, 100)
    for step in range(50):
        (task,) = plain.tasks(step, np.random.default_rng(step))
        assert task.config == net.space.sample(np.random.default_rng(step)) and not task.teacher
        assert task.candidates == ()
    attentive = make_strategy("uniform", net, 100, attentive=2)
    (task,) = attentive.tasks(3, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    assert task.config == net.space.sample(rng)  # the same first draw as without attentive sampling
    assert task.candidates == (net.space.sample(rng), net.space.sample(rng))
    assert attentive.describe()["attentive"] == 2


def test_logged_losses_are_the_steps_batch_means():
    """The losses a step reports (and the metrics log writes) are per-example means: ``loss_max`` the max
    subnet's label loss, ``loss_min`` the min subnet's, ``loss_other`` the mean over the random subnets of
    each one's soft cross-entropy against the max subnet's detached predictions; unweighted."""
    from nas.train.strategies import SubnetTask
    from nas.train.trainer import TrainConfig, _train_step

    torch.manual_seed(0)
    net = TinySupernet()
    net.drop.p = 0.0  # the reference forwards below must see what the step saw
    x, y = tiny_data(32).tensors
    space = net.space
    configs = [space.max(), space.min(), *(space.sample(s) for s in (1, 2, 4))]
    tasks = [SubnetTask(configs[0], 1.0, True)] + [SubnetTask(c, 0.5) for c in configs[1:]]
    cfg = TrainConfig(channels_last=False, label_smoothing=0.1)
    losses = _train_step(net, tasks, x, y, cfg)

    def logits(c):
        from nas.supernet import resize_to

        with torch.no_grad():
            return net(resize_to(x, net.activate(c)))

    teacher = torch.softmax(logits(configs[0]), 1)
    soft_ce = [float(-(teacher * torch.log_softmax(logits(c), 1)).sum(1).mean()) for c in configs[1:]]
    labels = float(torch.nn.functional.cross_entropy(logits(configs[0]), y, label_smoothing=0.1))
    assert losses["loss_max"] == pytest.approx(labels, abs=1e-5)
    assert losses["loss_min"] == pytest.approx(soft_ce[0], abs=1e-5)
    assert losses["loss_other"] == pytest.approx(np.mean(soft_ce[1:]), abs=1e-5)


def test_the_metrics_log_holds_the_lr_and_losses_of_the_step_it_names(tmp_path, monkeypatch):
    """Every 10th step's record: ``step`` counts the steps done, ``epoch`` is the (0-based) epoch of that step,
    ``lr`` the learning rate the optimizer applied in it and the losses those of its batch."""
    from nas.train import trainer

    applied, reported = [], []
    real_step, real_train_step = torch.optim.SGD.step, trainer._train_step

    def step(self, *args, **kwargs):
        applied.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    def train_step(*args, **kwargs):
        reported.append(real_train_step(*args, **kwargs))
        return reported[-1]

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    monkeypatch.setattr(trainer, "_train_step", train_step)
    torch.manual_seed(0)
    train_supernet(TinySupernet(), tiny_data(224), epochs=3, lr=0.1, out_dir=tmp_path, **FAST)  # 21 steps
    records = [r for r in _log_records(tmp_path) if "lr" in r]
    assert [r["step"] for r in records] == [10, 20, 21] and [r["epoch"] for r in records] == [1, 2, 2]
    for r in records:
        assert r["lr"] == applied[r["step"] - 1]
        assert {k: v for k, v in r.items() if k.startswith("loss")} == reported[r["step"] - 1]
    assert len(set(applied)) > 10  # the schedule moved, so a record of another step's lr would show


def _log_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(s).items() if k not in ("time", "seconds")} for s in lines]


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """Steps logged after the last checkpoint of a killed run are trained again; the log keeps them once."""
    data, val = tiny_data(256, seed=0), tiny_data(60, seed=1)
    kw = {"strategy": "progressive", "epochs": 3, "lr": 0.1, **FAST}
    torch.manual_seed(0)
    ref = TinySupernet()
    init = _weights(ref)
    train_supernet(ref, data, val_data=val, out_dir=tmp_path / "ref", **kw)
    net = TinySupernet()
    net.load_state_dict(init)
    with pytest.raises(RuntimeError, match="injected failure"):  # step 10 logged, last checkpoint at 9
        train_supernet(net, data, val_data=val, out_dir=tmp_path / "run", _fail_at_step=11, **kw)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "epo')  # a line cut short by the kill
    train_supernet(TinySupernet(), data, val_data=val, out_dir=tmp_path / "run", resume=True, **kw)
    assert _log_records(tmp_path / "run") == _log_records(tmp_path / "ref")


def test_attentive_run_resumes_to_identical_weights(tmp_path):
    data = tiny_data(256, seed=0)
    kw = {"strategy": "sandwich", "epochs": 2, "lr": 0.1, "strategy_options": {"attentive": 2}, **FAST}
    torch.manual_seed(0)
    ref = TinySupernet()
    init = _weights(ref)
    train_supernet(ref, data, out_dir=tmp_path / "ref", **kw)
    net = TinySupernet()
    net.load_state_dict(init)
    with pytest.raises(RuntimeError, match="injected failure"):
        train_supernet(net, data, out_dir=tmp_path / "run", _fail_at_step=7, **kw)
    resumed = TinySupernet()
    train_supernet(resumed, data, out_dir=tmp_path / "run", resume=True, **kw)
    assert _same(_weights(resumed), _weights(ref))


@pytest.mark.parametrize("strategy", ["sandwich", "uniform", "progressive", "delayed"])
def test_each_strategy_learns_the_tiny_task(strategy, tmp_path):
    torch.manual_seed(0)
    net = TinySupernet()
    data, test = tiny_data(320, seed=0), tiny_data(200, seed=1)
    before = evaluate_subnet(net, net.space.min(), test, calib_data=data)
    train_supernet(net, data, strategy=strategy, epochs=4, lr=0.1, out_dir=tmp_path, **FAST)
    after_max = evaluate_subnet(net, net.space.max(), test, calib_data=data)
    after_min = evaluate_subnet(net, net.space.min(), test, calib_data=data)
    assert after_max > 60 and after_min > max(before, 30), (before, after_max, after_min)
    assert (tmp_path / WEIGHTS).is_file() and (tmp_path / "train.json").is_file()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_max" in r or "loss_other" in r for r in lines) and lines[-1]["epoch"] == 4


def test_injected_failure_then_resume_gives_identical_weights(tmp_path):
    data, val = tiny_data(256, seed=0), tiny_data(60, seed=1)
    kw = {"strategy": "progressive", "epochs": 3, "lr": 0.1, **FAST}  # phases change mid-run: sort_channels
    torch.manual_seed(0)
    ref = TinySupernet()
    init = _weights(ref)
    train_supernet(ref, data, val_data=val, out_dir=tmp_path / "ref", **kw)

    net = TinySupernet()
    net.load_state_dict(init)
    with pytest.raises(RuntimeError, match="injected failure after step 13"):
        train_supernet(net, data, val_data=val, out_dir=tmp_path / "run", _fail_at_step=13, **kw)
    assert (tmp_path / "run" / CHECKPOINT).is_file() and not (tmp_path / "run" / WEIGHTS).exists()
    resumed = TinySupernet()  # a fresh process would start from fresh (different) weights
    train_supernet(resumed, data, val_data=val, out_dir=tmp_path / "run", resume=True, **kw)
    assert _same(_weights(resumed), _weights(ref))
    again = load_weights(TinySupernet(), tmp_path / "run")
    assert _same(_weights(again), _weights(ref))


def test_resume_refuses_other_settings(tmp_path):
    data = tiny_data(128)
    net = TinySupernet()
    with pytest.raises(RuntimeError, match="injected"):
        train_supernet(net, data, epochs=2, lr=0.1, out_dir=tmp_path, _fail_at_step=4, **FAST)
    with pytest.raises(ValueError, match=r"different settings \(lr 0.1 -> 0.2\)"):
        train_supernet(net, data, epochs=2, lr=0.2, out_dir=tmp_path, resume=True, **FAST)


def test_a_finished_run_is_not_trained_over_by_accident(tmp_path):
    data = tiny_data(64)
    train_supernet(TinySupernet(), data, epochs=1, lr=0.1, out_dir=tmp_path, **FAST)
    before = (tmp_path / WEIGHTS).read_bytes()
    with pytest.raises(FileExistsError, match="resume=True to continue it, overwrite=True to start over"):
        train_supernet(TinySupernet(), data, epochs=1, lr=0.1, out_dir=tmp_path, **FAST)
    assert (tmp_path / WEIGHTS).read_bytes() == before
    log_lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    train_supernet(TinySupernet(), data, epochs=1, lr=0.2, out_dir=tmp_path, overwrite=True, **FAST)
    assert (tmp_path / WEIGHTS).read_bytes() != before
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(
        log_lines
    )  # a new log, not appended


def test_kill_9_mid_epoch_and_resume_in_a_new_process(tmp_path):
    """A real crash: the child process SIGKILLs itself right after a mid-epoch checkpoint."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from train_tiny import TinySupernet, tiny_data
        import nas.train.trainer as tr
        from nas.train import train_supernet
        torch.set_num_threads(1)
        kill = sys.argv[2] == "kill"
        if kill:
            original = tr.save_checkpoint
            def save_then_die(path, net, opt, state):
                original(path, net, opt, state)
                if state["step"] == 6:  # epoch 1 has 8 steps: this is mid-epoch
                    os.kill(os.getpid(), signal.SIGKILL)
            tr.save_checkpoint = save_then_die
        torch.manual_seed(0)
        net = TinySupernet()
        train_supernet(net, tiny_data(256), epochs=2, lr=0.1, out_dir=sys.argv[1], resume=sys.argv[3] == "1",
                       batch_size=32, progress=False, checkpoint_every=3, channels_last=False, device="cpu")
        """
    )
    path = tmp_path / "child.py"
    path.write_text(script)

    def child(out, mode, resume):
        return subprocess.run(
            [sys.executable, str(path), str(out), mode, resume], capture_output=True, text=True
        )

    killed = child(tmp_path / "run", "kill", "0")
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "run" / WEIGHTS).exists()
    assert child(tmp_path / "run", "ok", "1").returncode == 0
    assert child(tmp_path / "ref", "ok", "0").returncode == 0
    a = load_weights(TinySupernet(), tmp_path / "run")
    b = load_weights(TinySupernet(), tmp_path / "ref")
    assert _same(_weights(a), _weights(b))


def test_bad_arguments(tmp_path):
    net = TinySupernet()
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        train_supernet(net, tiny_data(64), strategy="nope", out_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size=128 is larger"):
        train_supernet(net, tiny_data(64), batch_size=128, out_dir=tmp_path, progress=False)
    with pytest.raises(TypeError, match="unknown options"):
        train_supernet(net, tiny_data(64), out_dir=tmp_path, bogus=1)


def test_augmentation_shifts_by_whole_pixels():
    from nas.train.trainer import _augment

    x = torch.randn(16, 1, 12, 12)
    shifted = _augment(x, torch.Generator().manual_seed(0), max_shift=2)
    moved = 0
    for original, out in zip(x, shifted):
        # each image equals the original moved by some (dy, dx) in [-2, 2]^2 (inside the overlap), unblurred
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ys, xs = slice(max(dy, 0), 12 + min(dy, 0)), slice(max(dx, 0), 12 + min(dx, 0))
                rolled = torch.roll(original, (dy, dx), (1, 2))
                if torch.allclose(rolled[:, ys, xs], out[:, ys, xs], atol=1e-5):
                    matches.append((dy, dx))
        assert len(matches) == 1
        moved += matches[0] != (0, 0)
    assert moved >= 8  # 24 of the 25 offsets move the image
    again = _augment(x, torch.Generator().manual_seed(0), max_shift=2)
    assert torch.equal(shifted, again)


def test_augmentation_fills_each_colour_channel_with_its_own_minimum():
    """Normalised CIFAR channels have different minima (black is -1.99 in blue, -1.71 in red): one minimum over
    all channels pushed the border of the others below anything in the image."""
    from nas.train.trainer import _augment

    x = torch.rand(8, 3, 10, 10) + torch.tensor([-1.71, -1.8, -1.99]).view(1, 3, 1, 1)
    shifted = _augment(x, torch.Generator().manual_seed(1), max_shift=2)
    lowest = x.amin(dim=(2, 3))
    assert (shifted >= lowest[..., None, None] - 1e-6).all()
    border = shifted[..., 0, :].amin(dim=2)  # images moved down have their top row filled
    assert torch.isclose(border, lowest, atol=1e-6).any(dim=1).sum() >= 1


def test_unknown_augmentation_is_refused(tmp_path):
    net = TinySupernet()
    with pytest.raises(ValueError, match="augment"):
        train_supernet(net, tiny_data(), epochs=1, out_dir=tmp_path, progress=False, augment="cutmix")


def test_labels_of_the_wrong_kind_are_named_before_training(tmp_path):
    net = TinySupernet()
    x, y = tiny_data(64).tensors
    with pytest.raises(
        ValueError, match=r"train_data: labels are torch\.float32; class indices must be integers"
    ):
        train_supernet(net, (x, y.float()), epochs=1, out_dir=tmp_path, **FAST)
    with pytest.raises(TypeError, match=r"val_data: .* a tuple of \(ndarray, ndarray\)"):
        train_supernet(net, (x, y), (x.numpy(), y.numpy()), epochs=1, out_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match=r"train_data: expected images \(N, C, H, W\) and N labels"):
        train_supernet(net, (x[:, 0], y), epochs=1, out_dir=tmp_path, **FAST)
    # int32 labels (numpy's default on some platforms) train as int64 ones do.
    assert train_supernet(net, (x, y.int()), epochs=1, out_dir=tmp_path, overwrite=True, **FAST).steps == 2


def test_a_label_beyond_the_supernets_outputs_is_named(tmp_path):
    """torch said only "Target 10 is out of bounds." from inside the loss."""
    x, y = tiny_data(64).tensors
    y = y.clone()
    y[5] = 10
    for distill in (True, False):
        with pytest.raises(ValueError, match=r"label 10 is out of range .* 10 outputs .* num_classes=11"):
            train_supernet(TinySupernet(), (x, y), epochs=1, out_dir=tmp_path, distill=distill, **FAST)


def test_a_torn_checkpoint_or_weights_file_is_a_clear_error(tmp_path):
    """A file cut short after it was written (a copy, a full disk) names itself and the fix, and is kept."""
    data = tiny_data(64)
    train_supernet(TinySupernet(), data, epochs=1, lr=0.1, out_dir=tmp_path, **FAST)
    for name in (CHECKPOINT, WEIGHTS):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:1000])
    torn = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(ValueError, match=rf"{CHECKPOINT} is not a readable safetensors file .*move it away"):
        train_supernet(TinySupernet(), data, epochs=1, lr=0.1, out_dir=tmp_path, resume=True, **FAST)
    assert (tmp_path / CHECKPOINT).read_bytes() == torn
    with pytest.raises(
        ValueError, match=rf"{WEIGHTS} is not a readable safetensors file .*nas train --resume"
    ):
        load_weights(TinySupernet(), tmp_path)


def test_a_run_killed_during_validation_logs_that_epoch_when_resumed(tmp_path, monkeypatch):
    """The epoch's checkpoint is written before its validation: a kill during validation used to leave that
    epoch without a record for good; and each resumed session's `seconds` restarted at 0."""
    import nas.train.trainer as trainer

    data, val = tiny_data(128, seed=0), tiny_data(40, seed=1)
    kw = {"epochs": 3, "lr": 0.1, "val_data": val, **FAST}
    torch.manual_seed(0)
    ref = TinySupernet()
    init = _weights(ref)
    train_supernet(ref, data, out_dir=tmp_path / "ref", **kw)

    real_validate, calls = trainer._validate, []

    def killed_in_second_validation(*args):
        calls.append(1)
        if len(calls) == 2:
            raise trainer._InjectedFailure("killed during validation")
        return real_validate(*args)

    monkeypatch.setattr(trainer, "_validate", killed_in_second_validation)
    net = TinySupernet()
    net.load_state_dict(init)
    with pytest.raises(RuntimeError, match="killed during validation"):
        train_supernet(net, data, out_dir=tmp_path / "run", **kw)
    monkeypatch.setattr(trainer, "_validate", real_validate)
    assert [r.get("epoch") for r in _log_records(tmp_path / "run") if "val_max" in r] == [1]
    resumed = TinySupernet()
    train_supernet(resumed, data, out_dir=tmp_path / "run", resume=True, **kw)
    assert _log_records(tmp_path / "run") == _log_records(tmp_path / "ref")
    assert all(
        torch.equal(a, b) for a, b in zip(_weights(resumed).values(), _weights(ref).values(), strict=True)
    )
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    epoch_seconds = [r["seconds"] for r in map(json.loads, lines) if "seconds" in r]
    assert epoch_seconds == sorted(epoch_seconds)  # training time so far, across sessions
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["seconds"] > summary["session_seconds"] > 0


def test_resuming_a_finished_run_keeps_its_validation_accuracy(tmp_path):
    data, val = tiny_data(64, seed=0), tiny_data(40, seed=1)
    kw = {"epochs": 1, "lr": 0.1, "val_data": val, "out_dir": tmp_path, **FAST}
    train_supernet(TinySupernet(), data, **kw)
    before = json.loads((tmp_path / "train.json").read_text())["val_accuracy"]
    assert set(before) == {"max", "min"}
    # nothing left to train (a finished run, or one killed during its final validation): validated again
    train_supernet(TinySupernet(), data, resume=True, **kw)
    assert json.loads((tmp_path / "train.json").read_text())["val_accuracy"] == before


def test_train_json_lists_every_session_of_a_resumed_run(tmp_path):
    """train.json's ``device`` names only the last session's device; ``sessions`` keeps one entry per session
    (the step it started at, its device), across resumes, while ``device`` stays as it was."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    data = tiny_data(128)  # 4 steps per epoch
    kw = {"epochs": 2, "lr": 0.1, "out_dir": tmp_path, **FAST}
    with pytest.raises(RuntimeError, match="injected"):  # killed in epoch 2: last checkpoint at step 4
        train_supernet(TinySupernet(), data, _fail_at_step=6, **kw)
    assert not (
        tmp_path / "train.json"
    ).exists()  # the killed session wrote none: its record is in the checkpoint
    train_supernet(TinySupernet(), data, resume=True, **kw)
    summary = json.loads((tmp_path / "train.json").read_text())
    version = torch.__version__
    assert summary["sessions"] == [
        {"start_step": 0, "device": "cpu", "torch": version},
        {"start_step": 4, "device": "cpu", "torch": version},
    ]
    assert summary["device"] == "cpu" and summary["steps"] == 8
    # resuming the finished run trains no steps, so it adds no session
    train_supernet(TinySupernet(), data, resume=True, **kw)
    assert json.loads((tmp_path / "train.json").read_text())["sessions"] == summary["sessions"]

    # a checkpoint written before sessions were recorded: its earlier sessions are unknown, said as null
    with pytest.raises(RuntimeError, match="injected"):
        train_supernet(TinySupernet(), data, _fail_at_step=6, overwrite=True, **kw)
    path = tmp_path / CHECKPOINT
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state = json.loads(meta["nas.train_state"])
    del state["sessions"]
    save_file(tensors, str(path), metadata={**meta, "nas.train_state": json.dumps(state)})
    train_supernet(TinySupernet(), data, resume=True, **kw)
    sessions = json.loads((tmp_path / "train.json").read_text())["sessions"]
    assert [(s["start_step"], s["device"]) for s in sessions] == [(0, None), (4, "cpu")]


def test_a_checkpoint_from_before_distill_labels_still_resumes(tmp_path):
    """Checkpoints written before the ``distill_labels`` setting existed lack it; its default trains as its absence
    did, so such a run resumes (and one that asks for another value is refused, naming it)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    data = tiny_data(128)
    kw = {"epochs": 2, "lr": 0.1, "out_dir": tmp_path, **FAST}
    with pytest.raises(RuntimeError, match="injected"):
        train_supernet(TinySupernet(), data, _fail_at_step=4, **kw)
    path = tmp_path / CHECKPOINT
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state = json.loads(meta["nas.train_state"])
    del state["settings"]["distill_labels"]  # what an older version wrote
    save_file(tensors, str(path), metadata={**meta, "nas.train_state": json.dumps(state)})
    with pytest.raises(ValueError, match=r"different settings \(distill_labels 0.0 -> 0.5\)"):
        train_supernet(TinySupernet(), data, resume=True, distill_labels=0.5, **kw)
    assert train_supernet(TinySupernet(), data, resume=True, **kw).steps == 8


def test_distill_labels_mixes_the_labels_into_the_students_loss(tmp_path):
    data = tiny_data(64)
    with pytest.raises(ValueError, match=r"distill_labels=1.5 must be in \[0, 1\]"):
        train_supernet(TinySupernet(), data, epochs=1, distill_labels=1.5, out_dir=tmp_path / "bad", **FAST)
    runs = {}
    for w in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        net = TinySupernet()
        train_supernet(net, data, epochs=1, lr=0.1, distill_labels=w, out_dir=tmp_path / str(w), **FAST)
        runs[w] = _weights(net)
    assert not _same(runs[0.0], runs[0.5]) and not _same(runs[0.5], runs[1.0])
    # All labels is the same run as no distillation at all.
    torch.manual_seed(0)
    net = TinySupernet()
    train_supernet(net, data, epochs=1, lr=0.1, distill=False, out_dir=tmp_path / "nodistill", **FAST)
    assert _same(_weights(net), runs[1.0])


def _reference_run(
    net, x, y, strategy, *, batch_size, lr, weight_decay, smoothing, mix, clip, warmup_epochs, seed, **opts
):
    """One epoch of train_supernet written out by hand (augment off): the same batches and subnets (seeded by
    the epoch and the step), the loss of every subnet summed (a student's: ``mix`` of the labels' loss, the rest
    cross-entropy against the max subnet's detached softmax), one clip of the summed gradient, then SGD with
    Nesterov momentum 0.9 and weight decay on weights only; linear warmup then cosine decay of the LR. At a
    phase change (``delayed``, ``progressive``) channels are re-sorted and the momentum starts afresh."""
    import math

    from nas.supernet import resize_to

    total = len(x) // batch_size
    strat = make_strategy(strategy, net, total, **opts)
    warm = int(warmup_epochs * total)
    params = list(net.named_parameters())
    momentum = {}
    phase = strat.phase(0)
    torch.manual_seed(seed)  # dropout
    for step in range(total):
        if strat.phase(step) != phase:  # channels re-sorted by importance, momentum started afresh
            net.sort_channels()
            momentum.clear()
            phase = strat.phase(step)
        batch = torch.from_numpy(np.random.default_rng([seed, 1, 0]).permutation(len(x)))
        batch = batch[step * batch_size : (step + 1) * batch_size]
        xb, yb = x[batch], y[batch]
        if step < warm:
            step_lr = lr * (step + 1) / warm
        else:
            step_lr = 0.5 * lr * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        loss, teacher = 0.0, None
        for task in strat.tasks(step, np.random.default_rng([seed, 2, step])):
            cfg = net.activate(task.config)
            logp = torch.log_softmax(net(resize_to(xb, cfg)), 1)
            labels = ((1 - smoothing) * -logp.gather(1, yb[:, None])[:, 0] - smoothing * logp.mean(1)).mean()
            this = labels if teacher is None else (1 - mix) * -(teacher * logp).sum(1).mean() + mix * labels
            if task.teacher:
                teacher = logp.exp().detach()
            loss = loss + task.weight * this
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))
        scale = min(1.0, clip / (norm + 1e-6))
        with torch.no_grad():
            for (name, p), g in zip(params, grads, strict=True):
                if g is None:  # no subnet of the step used it: the optimizer skips it
                    continue
                d = g * scale + (weight_decay * p if p.dim() > 1 else 0.0)
                momentum[name] = d.clone() if name not in momentum else 0.9 * momentum[name] + d
                p -= step_lr * (d + 0.9 * momentum[name])


@pytest.mark.parametrize(
    ("strategy", "options", "mix"),
    [
        ("sandwich", {"num_random": 2}, 0.0),
        ("sandwich", {"num_random": 1}, 0.25),
        ("delayed", {"num_random": 1, "delay": 0.5, "ramp": 0.5}, 0.0),
        # 4 steps, one per phase: full net, kernel, + depth, everything; channels re-sorted at each change
        ("progressive", {"num_random": 1}, 0.0),
    ],
)
def test_training_steps_match_a_hand_written_reference(strategy, options, mix, tmp_path):
    """Loss terms (labels with smoothing for the max subnet, the detached teacher's soft predictions for the
    others, mixed with the labels by ``distill_labels``, the delayed strategy's ramped weights), gradients summed over the subnets and clipped once, the LR
    schedule, and SGD with weight decay on weights only: train_supernet == the reference within rounding."""
    x, y = tiny_data(128).tensors  # 4 steps of FAST's 32
    hyper = {"lr": 0.1, "weight_decay": 1e-2, "warmup_epochs": 0.5, "seed": 3}
    torch.manual_seed(0)
    net = TinySupernet()
    train_supernet(
        net,
        (x, y),
        strategy=strategy,
        epochs=1,
        label_smoothing=0.1,
        grad_clip=1.5,
        distill_labels=mix,
        strategy_options={k: v for k, v in options.items() if k != "num_random"},
        n_random=options["num_random"],
        augment=False,
        out_dir=tmp_path,
        **hyper,
        **FAST,
    )
    torch.manual_seed(0)
    ref = TinySupernet()
    _reference_run(
        ref,
        x,
        y,
        strategy,
        batch_size=FAST["batch_size"],
        smoothing=0.1,
        mix=mix,
        clip=1.5,
        **hyper,
        **options,
    )
    ref.activate(ref.space.max())
    trained, expected = net.state_dict(), ref.state_dict()
    for k in expected:
        torch.testing.assert_close(trained[k], expected[k], rtol=1e-5, atol=1e-6, msg=k)


def test_two_data_parallel_workers_update_like_one_process_with_both_batches(tmp_path):
    """2 gloo workers x 16 examples == 1 process x 32 (gradients averaged; a net without batch norm, whose batch
    statistics are per worker). ``uniform`` leaves a subnet's unused parameters without gradients: the workers
    must skip them in the optimizer like one process does (zero gradients still applied weight decay and
    momentum)."""
    from safetensors.torch import load_file

    settings = {
        "strategy": "uniform",
        "epochs": 1,
        "lr": 0.1,
        "weight_decay": 1e-2,
        "augment": False,
        "seed": 3,
    }
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            import sys
            from pathlib import Path
            import torch
            import torch.distributed as dist
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from train_tiny import TinyNoBatchNorm, tiny_data
            from nas.train import trainer

            torch.set_num_threads(1)
            rank = int(sys.argv[1])
            dist.init_process_group("gloo", init_method="file://" + sys.argv[3], rank=rank, world_size=2)
            torch.manual_seed(0)
            net = TinyNoBatchNorm()
            cfg = trainer.TrainConfig(batch_size=16, channels_last=False, **{settings!r})
            x, y = tiny_data(128).tensors
            trainer._run(net, x, y, None, cfg, Path(sys.argv[2]), False, False, trainer._Sync(rank, 2))
            # gloo's threads still running at interpreter exit abort the process now and then ("terminate called
            # without an active exception", SIGABRT after the work is done, even after destroy_process_group):
            # close the group, then leave without the C++ teardown; the run's files are already written.
            dist.destroy_process_group()
            sys.stdout.flush()
            os._exit(0)
            """
        )
    )
    (tmp_path / "two").mkdir()
    cmd = [sys.executable, str(script), "RANK", str(tmp_path / "two"), str(tmp_path / "rendezvous")]
    procs = [
        subprocess.Popen(
            [rank if a == "RANK" else a for a in cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in ("0", "1")
    ]
    try:
        torch.manual_seed(0)
        net = TinyNoBatchNorm()
        train_supernet(net, tiny_data(128), out_dir=tmp_path / "one", **{**FAST, **settings})
        for proc in procs:
            output, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, output
    finally:
        for proc in procs:
            proc.kill()
    one, two = load_file(tmp_path / "one" / WEIGHTS), load_file(tmp_path / "two" / WEIGHTS)
    assert set(one) == set(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)


def test_device_is_checked_before_anything_is_written(tmp_path):
    from nas.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="trains on 'cpu' or 'cuda'"):
        resolve_device("meta")
    # a GPU this machine does not have: no CUDA at all, or an index past the last one
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match="CUDA GPU"):
        train_supernet(
            TinySupernet(), tiny_data(64), out_dir=tmp_path / "run", device=missing, progress=False
        )
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="one GPU per worker"):
        train_supernet(
            TinySupernet(), tiny_data(64), out_dir=tmp_path / "run", device="cuda:0", num_workers=2
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_and_resumes_on_the_gpu(tmp_path):
    """The net, each batch and the validation run on the GPU; checkpoints load back on the CPU and the GPU."""
    data, val = tiny_data(256), tiny_data(100, seed=1)
    torch.manual_seed(0)
    net = TinySupernet()
    kw = {**FAST, "device": "cuda", "channels_last": True, "epochs": 3, "lr": 0.1, "val_data": val}
    with pytest.raises(RuntimeError, match="injected"):
        train_supernet(net, data, out_dir=tmp_path, _fail_at_step=11, **kw)
    resumed = TinySupernet()
    result = train_supernet(resumed, data, out_dir=tmp_path, resume=True, **kw)
    assert result.steps == 24 and all(p.device.type == "cuda" for p in resumed.parameters())
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["device"] == torch.cuda.get_device_name()
    assert result.val_accuracy["max"] > 50  # the patches are easy: a net that trained on the GPU learnt them
    on_cpu = load_weights(TinySupernet(), tmp_path)
    cfg = on_cpu.space.max()
    acc_cpu = evaluate_subnet(on_cpu, cfg, val, calib_data=data)
    acc_gpu = evaluate_subnet(resumed, cfg, val, calib_data=data)  # CPU data, GPU net
    assert abs(acc_cpu - acc_gpu) <= 2.0  # the same weights; float sums may flip an example or two


def test_ray_workers_take_gpus_only_one_each():
    """NCCL cannot share a GPU between workers, and Ray Train waits forever for GPUs a cluster lacks."""
    from nas.train.ray_launcher import workers_use_gpu

    assert workers_use_gpu("auto", 2, 2) and workers_use_gpu("cuda", 4, 2)
    assert not workers_use_gpu("auto", 0, 2) and not workers_use_gpu("cpu", 8, 2)
    with pytest.warns(UserWarning, match="1 GPU.*for 2 workers.*training on CPUs"):
        assert not workers_use_gpu("auto", 1, 2)
    with pytest.raises(
        ValueError,
        match=r"needs one GPU per worker, and the Ray cluster has 1; use num_workers=1 \(without Ray\)",
    ):
        workers_use_gpu("cuda", 1, 2)


def test_min_weight_scales_the_min_subnets_loss_in_sandwich_steps(tmp_path):
    net = TinySupernet()
    rng = np.random.default_rng(0)
    tasks = make_strategy("sandwich", net, 100, num_random=2, min_weight=0.25).tasks(0, rng)
    assert tasks[1].config == net.space.min()
    assert [t.weight for t in tasks] == [1.0, 0.25, 1.0, 1.0]
    delayed = make_strategy("delayed", net, 100, delay=0.5, ramp=0.2, min_weight=0.5)
    ramped = delayed.tasks(55, rng)
    assert (
        ramped[1].weight == pytest.approx(0.5 * delayed.ramp_weight(55))
        and ramped[2].weight == ramped[1].weight * 2
    )
    assert make_strategy("sandwich", net, 100, min_weight=0.5).describe()["min_weight"] == 0.5
    assert (
        "min_weight" not in make_strategy("sandwich", net, 100).describe()
    )  # older checkpoints still resume
    from nas.cli import build_parser, sampling_options

    args = build_parser().parse_args(["train", "--out", "x", "--min-weight", "0.5", "--attentive", "2"])
    assert sampling_options(args) == {"attentive": 2, "min_weight": 0.5}
    assert sampling_options(build_parser().parse_args(["train", "--out", "x"])) == {}
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"min_weight=.* must lie in \[0, 1\]"):
            make_strategy("sandwich", net, 100, min_weight=bad)

    # The trainer applies it: min weight 0 without random subnets trains the max subnet alone, as
    # progressive shrinking's full-network phase does.
    data = tiny_data(96, seed=0)
    kw = {"epochs": 1, "lr": 0.1, **FAST}
    runs = {}
    for name, strategy, options in (
        ("no-min", "sandwich", {"num_random": 0, "min_weight": 0.0}),
        ("max-only", "progressive", {"fractions": (1, 0, 0, 0)}),
        ("sandwich", "sandwich", {"num_random": 0}),
    ):
        torch.manual_seed(0)
        net = TinySupernet()
        net.drop.p = 0.0  # the min subnet's forward would otherwise draw dropout masks from the shared RNG
        train_supernet(net, data, strategy=strategy, strategy_options=options, out_dir=tmp_path / name, **kw)
        # parameters only: the min subnet still runs (its loss is logged), which moves BN running statistics
        runs[name] = {k: v.detach().clone() for k, v in net.named_parameters()}
    assert _same(runs["no-min"], runs["max-only"])
    assert not _same(runs["sandwich"], runs["max-only"])
