"""The gallery's progress: each training run reports to a labelled bar with an ETA on a
terminal (and to its snapshots), and nothing is printed when output is not a terminal."""

import pytest


class _Recorder:
    def __init__(self):
        self.calls = []

    def start(self, epochs, steps_per_epoch, first_epoch):
        self.calls.append(("start", epochs))

    def step(self, loss):
        self.calls.append(("step",))

    def epoch(self, record):
        self.calls.append(("epoch", record["epoch"]))

    def close(self):
        self.calls.append(("close",))


def test_each_training_run_of_the_gallery_reports_to_its_bar_and_its_snapshots(tmp_path):
    import torch

    from pushforward.gallery import Report
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import TrainConfig, fit, seeded

    bars: dict[str, _Recorder] = {}

    def make_bar(label):
        bars[label] = _Recorder()
        return bars[label]

    snaps = _Recorder()
    report = Report(tmp_path, bars=make_bar)
    with seeded(0):
        vae = VAE(VAEConfig(dim=2, latent=1, hidden=[8], activation="relu"))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    fit(vae, x, TrainConfig(epochs=2, batch_size=32), progress=report.training("VAE", snaps))
    want = [("start", 2), ("step",), ("step",), ("epoch", 1), ("step",), ("step",), ("epoch", 2),
            ("close",)]  # fmt: skip
    assert list(bars) == ["VAE"] and bars["VAE"].calls == want and snaps.calls == want
    # without bars (the library's default: quiet) only the snapshots are told, or nothing
    quiet = Report(tmp_path)
    assert quiet.training("VAE", snaps) is snaps and quiet.training("VAE", None) is None


@pytest.mark.parametrize("tty", [True, False])
def test_demo_bars_show_the_run_and_an_eta_on_a_terminal_and_nothing_otherwise(
    tty, monkeypatch, capsys
):
    import sys

    import torch

    from pushforward.cli import BarProgress
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import TrainConfig, fit, seeded

    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    with seeded(0):
        vae = VAE(VAEConfig(dim=2, latent=1, hidden=[8], activation="relu"))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    fit(
        vae,
        x,
        TrainConfig(epochs=3, batch_size=32),
        progress=BarProgress("VAE on ring8", lines=False),
    )
    err = capsys.readouterr().err
    if tty:
        assert "VAE on ring8: epoch 3/3" in err and "6/6" in err and "<" in err  # elapsed<ETA
    else:
        assert err == ""
