"""The VAE: reparameterisation, the ELBO/IWAE bounds against the exact linear-Gaussian likelihood,
schedules, diagnostics, exact resume and clean stops."""

import dataclasses
import logging
import math

import pytest
import torch

from pushforward.core import ConfigError, DataError, TrainingError
from pushforward.data import grid25, load_data
from pushforward.models.pca import PPCAConfig, ProbabilisticPCA
from pushforward.models.vae import VAE, VAEConfig
from pushforward.train import TrainConfig, fit, seeded


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_gradients_flow_through_the_reparameterisation():
    with seeded(0):
        vae = VAE(VAEConfig(dim=6, latent=2, loss="l2", hidden=[8], activation="relu"))
    mu = torch.zeros(4, 2, requires_grad=True)
    logvar = torch.full((4, 2), 0.3, requires_grad=True)
    z = vae.reparameterize(mu, logvar, generator=gen(1))
    z.sum().backward()
    eps = torch.randn(4, 2, generator=gen(1))
    torch.testing.assert_close(mu.grad, torch.ones(4, 2))
    torch.testing.assert_close(logvar.grad, 0.5 * math.exp(0.15) * eps)
    vae.loss(torch.rand(4, 6, generator=gen(2)), generator=gen(3))["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.encoder.parameters())


def linear_gaussian_vae(d=5, k=2, n=400, seed=0):
    """A VAE whose decoder is the PPCA maximum-likelihood pushforward and whose encoder is exact."""
    g = gen(seed)
    w_true = torch.randn(d, k, generator=g, dtype=torch.float64) * 2
    x = (torch.randn(n, k, generator=g, dtype=torch.float64) @ w_true.T
         + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0)  # fmt: skip
    ppca = ProbabilisticPCA(PPCAConfig(latent=k)).fit(x)
    w, mu, s2 = ppca.W_, ppca.mean_, float(ppca.noise_variance_)
    m = w.T @ w + s2 * torch.eye(k, dtype=torch.float64)
    assert torch.allclose(m, torch.diag(torch.diag(m)))  # W = U_k(Λ_k − σ²I)^½ makes M diagonal
    vae = VAE(
        VAEConfig(
            dim=d, latent=k, loss="gaussian", sigma=math.sqrt(s2), hidden=[], activation="identity"
        )
    )
    vae = vae.double()
    enc, dec = vae.encoder[0], vae.decoder[0]
    a = torch.linalg.solve(m, w.T)  # posterior mean M⁻¹Wᵀ(x − μ)
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(mu)
        enc.weight.zero_()
        enc.weight[:k] = a
        enc.bias[:k] = -a @ mu
        enc.bias[k:] = torch.log(s2 / torch.diag(m))  # posterior variance σ²M⁻¹
    return vae, ppca, x


def test_iwae_equals_the_exact_likelihood_when_q_is_the_exact_posterior():
    vae, ppca, x = linear_gaussian_vae()
    exact = ppca.log_prob(x)
    # every importance weight p(x, z)/q(z | x) equals p(x): the estimate is exact for any k
    est = vae.log_likelihood(x, k=7, generator=gen(2))
    torch.testing.assert_close(est.log_px, exact, rtol=1e-6, atol=1e-6)
    assert float(est.stderr.max()) < 1e-6
    # the one-draw ELBO (analytic KL) is then unbiased for log p(x): equal up to Monte Carlo error
    elbo = vae.elbo(x, generator=gen(1))["elbo"]
    gap = float((elbo - exact).mean())
    assert abs(gap) < 4 * float((elbo - exact).std()) / math.sqrt(len(x))


def test_elbo_below_iwae_below_exact_and_iwae_converges_as_k_grows():
    vae, ppca, x = linear_gaussian_vae(seed=1)
    with torch.no_grad():  # a worse q: means shifted by about one posterior std, wider variances
        vae.encoder[0].bias[:2] += 0.1
        vae.encoder[0].bias[2:] += 0.5
    exact = float(ppca.log_prob(x).mean())
    elbo = float(vae.elbo(x, generator=gen(3))["elbo"].mean())
    iwae = {k: vae.log_likelihood(x, k=k, generator=gen(4)) for k in (1, 10, 100, 5000)}
    assert elbo < iwae[10].mean < iwae[100].mean < iwae[5000].mean
    assert iwae[5000].mean <= exact + 3 * iwae[5000].mean_stderr
    assert exact - iwae[5000].mean < 0.01
    assert exact - iwae[1].mean > 0.1  # the gap closes with k; it is not zero to start with
    assert iwae[1].mean == pytest.approx(elbo, abs=0.1)  # k = 1 is a one-sample ELBO


def test_iwae_chunking_changes_only_the_random_draws():
    vae, _, x = linear_gaussian_vae(seed=2)
    with torch.no_grad():
        vae.encoder[0].bias[:2] += 0.1

    def estimate(max_elements):
        return vae.log_likelihood(
            x[:50], k=256, generator=gen(5), batch_size=25, max_elements=max_elements
        )

    a, b = estimate(25 * 5 * 256), estimate(25 * 5 * 7)
    torch.testing.assert_close(a.log_px, estimate(25 * 5 * 256).log_px)  # reproducible
    assert abs(a.mean - b.mean) < 4 * math.hypot(a.mean_stderr, b.mean_stderr)


def test_kl_schedules_and_free_bits():
    with seeded(0):
        lin = VAE(VAEConfig(dim=4, latent=2, kl_weight=2.0, kl_schedule="linear", kl_warmup=4))
        cyc = VAE(VAEConfig(dim=4, latent=2, kl_schedule="cyclical", kl_warmup=4))
    assert [lin.current_kl_weight(e) for e in (0, 1, 4, 9)] == [0.0, 0.5, 2.0, 2.0]
    assert lin.current_kl_weight(None) == 2.0
    assert [cyc.current_kl_weight(e) for e in (0, 1, 2, 3, 4, 5)] == [0, 0.5, 1, 1, 0, 0.5]
    with seeded(0):
        fb = VAE(
            VAEConfig(dim=4, latent=2, loss="l2", free_bits=100.0, hidden=[8], activation="relu")
        )
    x = torch.rand(16, 4, generator=gen(1))
    with torch.no_grad():
        terms = fb.loss(x, generator=gen(2))
    # every dimension sits below the free-bits floor, so the KL adds a constant, no gradient
    assert float(terms["loss"]) == pytest.approx(float(terms["reconstruction"]) + 200.0)
    assert float(terms["kl"]) < 100


def test_l2_loss_is_the_negative_elbo_up_to_its_constant():
    with seeded(0):
        vae = VAE(VAEConfig(dim=6, latent=2, loss="l2", hidden=[8], activation="relu"))
    x = torch.rand(32, 6, generator=gen(1))
    with torch.no_grad():
        loss = float(vae.loss(x, generator=gen(2))["loss"])
    elbo = float(vae.elbo(x, generator=gen(2))["elbo"].mean())
    assert loss == pytest.approx(-elbo - 3 * math.log(math.pi), rel=1e-5)


def test_diagnostics_find_active_units_and_warn_on_collapse(caplog):
    x = load_data("moons", n=2000).x
    with seeded(0):
        good = VAE(
            VAEConfig(dim=2, latent=2, loss="gaussian", sigma=0.1, hidden=[64], activation="relu")
        )
        collapsed = VAE(
            VAEConfig(
                dim=2, latent=2, loss="gaussian", kl_weight=50.0, hidden=[64], activation="relu"
            )
        )
    hist = fit(good, x, TrainConfig(epochs=5, batch_size=100))
    assert hist[-1]["active_units"] >= 1 and not hist[-1]["posterior_collapse"]
    assert len(hist[-1]["kl_per_dim"]) == 2
    with caplog.at_level(logging.WARNING, logger="pushforward.models.vae.model"):
        hist = fit(collapsed, x, TrainConfig(epochs=5, batch_size=100))
    assert hist[-1]["active_units"] == 0 and hist[-1]["posterior_collapse"]
    assert "posterior collapse" in caplog.text


@pytest.mark.slow
def test_two_dimensional_vae_on_grid25_reaches_all_25_modes():
    x = load_data("grid25", n=10_000).x
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=2,
                latent=2,
                loss="gaussian",
                learn_sigma=True,
                hidden=[128, 128],
                activation="relu",
            )
        )
    fit(vae, x, TrainConfig(epochs=30, batch_size=128, lr=2e-3))
    samples = vae.sample(2500, generator=gen(1))
    assert samples.shape == (2500, 2)
    dist, mode = torch.cdist(samples, grid25().means.float()).min(1)
    captured = set(mode[dist <= 3 * 0.05].tolist())  # PacGAN: within 3 std of a mode
    assert captured == set(range(25))


def test_sampling_is_a_reproducible_pushforward_of_the_prior():
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=64, latent=3, loss="bce", image_shape=(8, 8), hidden=[16], activation="relu"
            )
        )
    a, b = vae.sample(10, generator=gen(1)), vae.sample(10, generator=gen(1))
    assert a.shape == (10, 64) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert vae.as_pushforward().event_shape == (64,)
    assert vae.interpolate(torch.rand(64), torch.rand(64), steps=5).shape == (5, 64)
    assert vae.reconstruct(torch.rand(7, 64)).shape == (7, 64)


def test_resumed_vae_with_a_schedule_equals_an_uninterrupted_run(tmp_path):
    x = load_data("digits").x[:300]

    def make():
        with seeded(0):
            return VAE(
                VAEConfig(
                    dim=64,
                    latent=2,
                    kl_schedule="linear",
                    kl_warmup=3,
                    hidden=[32],
                    activation="relu",
                )
            )

    full, part = make(), make()
    cfg = TrainConfig(epochs=4, batch_size=64, seed=7)
    fit(full, x, cfg)
    fit(part, x, TrainConfig(epochs=2, batch_size=64, seed=7), run_dir=tmp_path)
    resumed = make()
    fit(resumed, x, cfg, run_dir=tmp_path, resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_finite_reconstruction_stops_training_naming_the_term(tmp_path):
    x = torch.full((64, 3), 1e30)  # finite data whose squared error overflows float32
    with seeded(0):
        vae = VAE(VAEConfig(dim=3, latent=2, loss="l2", hidden=[8], activation="relu"))
    with pytest.raises(
        TrainingError, match=r"the reconstruction term became inf at epoch 1, step 1"
    ):
        fit(vae, x, TrainConfig(epochs=2, batch_size=32), run_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"loss": "mse"},
            "unknown reconstruction loss 'mse'; known: bce, gaussian, l1, l2, laplace",
        ),
        (
            {"kl_schedule": "cosine"},
            "unknown KL schedule 'cosine'; known: constant, cyclical, linear",
        ),
        (
            {"loss": "bce", "sigma": 0.1},
            "sigma and learn_sigma apply to the 'gaussian' and 'laplace'",
        ),
        ({"loss": "gaussian", "sigma": -1.0}, "sigma = -1.0 is not allowed"),
        ({"kl_weight": -1.0}, "kl_weight = -1.0 is not allowed"),
        ({"free_bits": -0.5}, "free_bits = -0.5 is not allowed"),
        ({"latent": 0}, "latent = 0 is not allowed; use an integer ≥ 1"),
    ],
)
def test_bad_vae_settings_name_the_problem(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VAE(VAEConfig(**{"dim": 4, "latent": 2, **kwargs}))


def test_bad_inputs_to_the_estimators():
    with seeded(0):
        vae = VAE(VAEConfig(dim=4, latent=2))
    with pytest.raises(DataError, match=r"x must have shape \(n, 4\), got \(3, 5\)"):
        vae.elbo(torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="k = 0 is not allowed"):
        vae.log_likelihood(torch.zeros(3, 4), k=0)


def test_a_conv_vae_takes_channel_widths_of_its_own_not_the_mlp_widths():
    from pushforward.nets import CONV_WIDTHS
    from pushforward.runs import RunConfig

    conv = RunConfig.from_flat({"model": "vae", "data": "digits", "net": "conv"}).settings
    mlp = RunConfig.from_flat({"model": "vae", "data": "digits"}).settings
    assert (conv.net, conv.hidden) == ("conv", CONV_WIDTHS)
    assert (mlp.net, mlp.hidden) == ("mlp", [512])
    model = conv.build(load_data("digits"))
    assert model.get_config()["hidden"] == CONV_WIDTHS


def test_a_mixture_sampler_gives_the_linear_gaussian_marginal_likelihood():
    """With a linear decoder x = Wz + b + σε and a one-component sampler N(m, S), the model it
    samples is N(Wm + b, WSWᵀ + σ²I): the IWAE estimate under the sampler reaches its log-density
    and the sampler's ELBO stays below, its Monte Carlo KL averaging to the closed-form
    KL(q ‖ N(m, S))."""
    from torch.distributions import MultivariateNormal, kl_divergence

    vae, _, x = linear_gaussian_vae()
    gmm = VAE(
        VAEConfig(
            dim=5,
            latent=2,
            loss="gaussian",
            sigma=1.0,
            prior="gmm",
            prior_components=1,
            hidden=[],
            activation="identity",
        )
    ).double()
    gmm.load_state_dict(vae.state_dict(), strict=False)
    m, s = torch.tensor([0.3, -0.2], dtype=torch.float64), torch.tensor([[0.8, 0.1], [0.1, 1.2]])
    with torch.no_grad():
        gmm.log_scale.copy_(vae.log_scale)
        gmm.prior_means.copy_(m[None])
        gmm.prior_covariances.copy_(s.double()[None])
    w, b = vae.decoder[0].weight, vae.decoder[0].bias
    cov = w @ s.double() @ w.T + vae.log_scale.exp().square() * torch.eye(5, dtype=torch.float64)
    exact = MultivariateNormal(w @ m + b, covariance_matrix=cov).log_prob(x[:50])
    ll = gmm.log_likelihood(x[:50], k=4000, generator=gen(1), sampler=True)
    assert (ll.log_px - exact).abs().max() < 5 * ll.stderr.max() + 1e-3
    rows = x[:50].repeat(200, 1)
    e = gmm.elbo(rows, generator=gen(2), sampler=True)
    mu, logvar = gmm.posterior(x[:50])
    q = MultivariateNormal(mu, covariance_matrix=torch.diag_embed(logvar.exp()))
    kl = kl_divergence(q, MultivariateNormal(m, covariance_matrix=s.double()))  # (50,)
    mc = e["kl_sampler"].reshape(200, 50)
    assert ((mc.mean(0) - kl).abs() < 5 * mc.std(0) / math.sqrt(200) + 1e-6).all()
    elbo = e["elbo_sampler"].reshape(200, 50)
    assert (elbo.mean(0) <= exact + 5 * elbo.std(0) / math.sqrt(200)).all()
    assert elbo.mean() < exact.mean()  # q is not this prior's exact posterior: a strict gap


def test_a_gmm_vae_is_scored_under_n01_and_its_sampler_beside():
    """prior="gmm" trains with N(0, I) and only samples from the fitted mixture: the ELBO and IWAE
    that evaluate reports are those under N(0, I) (an independent computation with
    torch.distributions, closed-form KL), the keys ending _sampler those under the mixture
    (MixtureSameFamily), each from the same draw."""
    from torch.distributions import (
        Categorical,
        Independent,
        MixtureSameFamily,
        MultivariateNormal,
        Normal,
        kl_divergence,
    )

    digits = load_data("digits")
    x = digits.x[:300]
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=64, latent=3, prior="gmm", prior_components=4, hidden=[32], activation="relu"
            )
        )
    fit(vae, x, TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=0))
    mixture = MixtureSameFamily(
        Categorical(probs=vae.prior_weights),
        MultivariateNormal(vae.prior_means, covariance_matrix=vae.prior_covariances),
    )
    assert vae.has_sampler
    rows = x[:40]
    e = vae.elbo(rows, generator=gen(5), sampler=True)
    with torch.no_grad():
        mu, logvar = vae.posterior(rows)
        q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
        z = mu + (0.5 * logvar).exp() * torch.randn(40, 3, generator=gen(5))
        logits = vae.decoder(z)
    log_px_z = torch.distributions.Bernoulli(logits=logits).log_prob(rows).sum(1)
    n01 = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    kl = kl_divergence(q, n01)
    torch.testing.assert_close(e["log_px_given_z"], log_px_z, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(e["kl"], kl, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(e["elbo"], log_px_z - kl, atol=1e-4, rtol=1e-5)
    kl_mix = q.log_prob(z).double() - mixture.log_prob(z.double())
    torch.testing.assert_close(e["kl_sampler"].double(), kl_mix, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(
        e["elbo_sampler"].double(), log_px_z.double() - kl_mix, atol=1e-4, rtol=1e-5
    )
    assert not torch.allclose(e["elbo"], e["elbo_sampler"].float(), atol=0.1)  # they differ
    assert "elbo_sampler" not in vae.elbo(rows, generator=gen(5))

    # the IWAE: one set of draws, log (1/k) Σ p(x | z) p(z) / q(z | x) under each prior
    k = 16
    ll = vae.log_likelihood(rows, k=k, generator=gen(6))
    ll_mix = vae.log_likelihood(rows, k=k, generator=gen(6), sampler=True)
    with torch.no_grad():
        eps = torch.randn(k, 40, 3, generator=gen(6))
        zs = mu + (0.5 * logvar).exp() * eps  # (k, 40, 3)
        lpx = torch.distributions.Bernoulli(logits=vae.decoder(zs)).log_prob(rows).sum(-1)
    lq = q.log_prob(zs)
    for got, log_pz in ((ll, n01.log_prob(zs)), (ll_mix, mixture.log_prob(zs.double()))):
        want = torch.logsumexp((lpx + log_pz - lq).double(), 0) - math.log(k)
        torch.testing.assert_close(got.log_px, want, atol=1e-4, rtol=1e-5)
    out = vae.evaluate(rows, generator=gen(7), iwae_k=k)
    assert out["log_likelihood"] != out["log_likelihood_sampler"]
    assert out["neg_elbo"] == -out["elbo"] and out["neg_elbo_sampler"] == -out["elbo_sampler"]
    assert math.isfinite(out["log_likelihood_sampler_stderr"])
    plain = VAE.from_config({**vae.get_config(), "prior": "normal"})
    plain.load_state_dict(vae.state_dict(), strict=False)
    same = plain.evaluate(rows, generator=gen(7), iwae_k=k)
    for key in ("elbo", "kl", "log_likelihood"):  # the same network under the same prior
        assert abs(same[key] - out[key]) < 1e-4, key
    assert "log_likelihood_sampler" not in same


def test_finish_fits_the_mixture_prior_to_the_codes_of_the_training_data():
    """fit ends with EM on μ(x): at EM's fixed point the mixture's mean and covariance are the
    codes' own (up to the ridge added to each covariance), and sampling draws from it."""
    digits = load_data("digits")
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=64, latent=3, prior="gmm", prior_components=6, hidden=[32], activation="relu"
            )
        )
    fit(vae, digits.x, TrainConfig(epochs=2, batch_size=128, lr=3e-3, seed=0))
    with torch.no_grad():
        codes = vae.encode(digits.x).double()
    w, m, c = vae.prior_weights, vae.prior_means, vae.prior_covariances
    assert w.shape == (6,) and abs(float(w.sum()) - 1) < 1e-12 and (w > 0.01).all()
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (c + m[:, :, None] * m[:, None, :])).sum(0)
    torch.testing.assert_close(mean, codes.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        second - torch.outer(mean, mean), torch.cov(codes.T, correction=0), atol=1e-4, rtol=1e-4
    )
    # the mixture explains the codes better than N(0, I) does
    normal = -0.5 * (codes.pow(2).sum(1) + 3 * math.log(2 * math.pi))
    assert vae.latent_measure.log_prob(codes).mean() > normal.mean() + 0.5
    z = vae.latent_measure.sample(5, generator=gen(4))
    with torch.no_grad():
        torch.testing.assert_close(vae.sample(5, generator=gen(4)), vae.decode(z))
    # fewer rows than components: the fitted ones are repeated, the weights still sum to 1
    small = VAE(
        VAEConfig(dim=64, latent=3, prior="gmm", prior_components=6, hidden=[32], activation="relu")
    )
    small.finish(digits.x[:4])
    assert abs(float(small.prior_weights.sum()) - 1) < 1e-12
    assert torch.isfinite(small.latent_measure.log_prob(codes[:10])).all()


def test_the_prior_defaults_by_data_kind_and_old_runs_keep_n01():
    from pushforward.models.vae import VAEConfig

    assert VAEConfig().resolve("images").prior == "gmm"
    points = VAEConfig().resolve("points")
    assert (points.prior, points.prior_components, points.hidden) == ("vamp", 200, [256, 256])
    assert VAEConfig(prior="normal", hidden=[8]).resolve("points").prior == "normal"
    # the 200 pseudo-inputs were measured for the VampPrior; another prior keeps 50
    assert VAEConfig(prior="gmm").resolve("points").prior_components == 50
    assert VAEConfig(prior="vamp").resolve("points").prior_components == 200
    from pushforward.models.registry import MODELS

    train = MODELS["vae"].train_defaults_for("points")
    assert (train["epochs"], train["lr_schedule"], train["lr"]) == (60, "cosine", 3e-3)
    assert "epochs" not in MODELS["vae"].train_defaults_for("images")
    assert VAEConfig(prior="normal").resolve("images").prior == "normal"
    assert VAEConfig.stored_defaults() == {"prior": "normal", "prior_components": 50}
    digits = load_data("digits")
    few = dataclasses.replace(digits, x=digits.x[:20], labels=digits.labels[:20])
    small = VAEConfig(latent=2).build(few)
    assert small.config.prior_components == 20  # never more components than rows
    with pytest.raises(ConfigError, match="unknown prior 'bogus'"):
        VAE(VAEConfig(dim=4, latent=2, prior="bogus"))
    with pytest.raises(ConfigError, match="prior_components = 0"):
        VAE(VAEConfig(dim=4, latent=2, prior="gmm", prior_components=0))


def test_a_collapsed_encoder_gets_a_narrow_prior_and_a_log_line_not_a_warning(caplog):
    import warnings

    vae = VAE(VAEConfig(dim=10, latent=2, loss="l2", prior="gmm", prior_components=5))
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.zero_()  # every code is 0: EM finds one distinct cluster
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        vae.finish(torch.rand(100, 10, generator=gen(0)))
    assert not caught
    assert "fitting the mixture prior: Number of distinct clusters (1)" in caplog.text
    assert abs(float(vae.prior_weights.sum()) - 1) < 1e-12
    assert vae.latent_measure.sample(50, generator=gen(1)).abs().max() < 0.05


def test_a_vae_keeps_its_config_and_reads_what_earlier_releases_stored():
    # format 1 nested the network and had no prior; format 2 added the prior
    stored = {
        "dim": 2, "free_bits": 0.0, "image_shape": None, "kl_schedule": "constant",
        "kl_warmup": 10.0, "kl_weight": 1.0, "latent": 2, "learn_sigma": True,
        "loss": "gaussian", "net": {"activation": "silu", "hidden": [8], "kind": "mlp"},
        "sigma": 0.07,
    }  # fmt: skip
    config = VAEConfig.from_stored(stored)
    assert (config.net, config.hidden, config.activation) == ("mlp", [8], "silu")
    assert (config.prior, config.prior_components, config.sigma) == ("normal", 50, 0.07)
    vae = VAE(config)
    assert vae.config == config and (vae.dim, vae.latent) == (2, 2)
    again = VAE.from_config(vae.get_config())
    assert again.config == config and again.get_config() == vae.get_config()
    with pytest.raises(ConfigError, match="dim must be set"):
        VAE(VAEConfig(latent=2))
    with pytest.raises(ConfigError, match="unknown setting 'width'"):
        VAEConfig.from_stored({**stored, "width": 3})


@pytest.mark.parametrize("prior", ["vamp", "flow"])
def test_a_trained_prior_is_the_prior_of_the_elbo_the_iwae_and_the_samples(prior):
    """A VampPrior is (1/K) Σ_k q(z | u_k) (MixtureSameFamily of the posteriors at the
    pseudo-inputs); a flow prior is zuko's flow. Either is the prior of training (its parameters
    get gradients, the KL from the same draw), of the ELBO and the IWAE
    (independent computations), and of sampling."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    x = grid25().sample(200, generator=gen(0))
    with seeded(0):
        vae = VAE(VAEConfig(dim=2, latent=2, loss="gaussian", sigma=0.3, learn_sigma=True,
                            prior=prior, prior_components=7, hidden=[16]))  # fmt: skip
    vae.prepare(x)
    assert vae.prior_is_trained and not vae.has_sampler
    with torch.no_grad():
        mu, logvar = vae.posterior(x[:30])
        std = (0.5 * logvar).exp()
        if prior == "vamp":
            torch.testing.assert_close(
                vae.prior_net.pseudo_inputs, x[torch.randperm(200, generator=gen(0))[:7]]
            )
            m, lv = vae.posterior(vae.prior_net.pseudo_inputs)
            p_z = MixtureSameFamily(Categorical(logits=torch.zeros(7)),
                                    Independent(Normal(m, (0.5 * lv).exp()), 1))  # fmt: skip
        else:
            p_z = vae.prior_net.flow()
        q = Independent(Normal(mu, std), 1)
        z = mu + std * torch.randn(30, 2, generator=gen(3))
        log_px_z = Independent(Normal(vae.decoder(z), vae.log_scale.exp()), 1).log_prob(x[:30])
        e = vae.elbo(x[:30], generator=gen(3))
        torch.testing.assert_close(e["kl"], q.log_prob(z) - p_z.log_prob(z), atol=1e-4, rtol=1e-4)
        want = log_px_z + p_z.log_prob(z) - q.log_prob(z)
        torch.testing.assert_close(e["elbo"], want, atol=1e-4, rtol=1e-4)
        k = 8
        zs = mu + std * torch.randn(k, 30, 2, generator=gen(4))
        lw = (Independent(Normal(vae.decoder(zs), vae.log_scale.exp()), 1).log_prob(x[:30])
              + p_z.log_prob(zs) - q.log_prob(zs))  # fmt: skip
        ll = vae.log_likelihood(x[:30], k=k, generator=gen(4))
        torch.testing.assert_close(ll.log_px.float(), torch.logsumexp(lw, 0) - math.log(k),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
        z = vae.latent_measure.sample(5, generator=gen(5))
        torch.testing.assert_close(vae.sample(5, generator=gen(5)), vae.decode(z))
        z = vae.latent_measure.sample(4000, generator=gen(5))
    # the draws follow p(z): their mean log-density is p's entropy's negative, by p's own draws
    with torch.no_grad(), seeded(8):  # torch.distributions draw from the global generator
        lp = vae.training_prior.log_prob(z)
        ref = p_z.log_prob(p_z.sample((4000,)))
    assert abs(float(lp.mean() - ref.mean())) < 5 * float(ref.std()) / math.sqrt(2000)
    manual = vae.manual_gradients(x[:64], generator=gen(6))
    # the VampPrior's step is written out (tests/models/test_fused.py); the flow's takes autograd
    assert (manual is None) == (prior == "flow")
    terms = vae.loss(x[:64], generator=gen(6))
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.prior_net.parameters())
    again = VAE.from_config(vae.get_config())
    again.load_state_dict(vae.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.elbo(x, generator=gen(7))["elbo"],
                                   vae.elbo(x, generator=gen(7))["elbo"])  # fmt: skip
    with pytest.raises(ConfigError, match="free_bits"):
        VAE(VAEConfig(dim=2, latent=2, prior=prior, free_bits=0.5))


def test_the_vamp_prior_scores_alike_with_and_without_gradients():
    """Scoring (no gradients) takes the in-place path a coordinate at a time; training takes the
    differentiable one: both are the mixture of the posteriors at the pseudo-inputs, in 3-D."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    from pushforward.models.vae.trained_prior import VampPrior

    with seeded(0):
        prior, enc = VampPrior(5, 4, 3), torch.nn.Linear(4, 6)
    prior.pseudo_inputs.data.normal_(generator=gen(1))

    def posterior(u):
        mu, lv = enc(u).chunk(2, dim=1)
        return mu, lv

    z = torch.randn(50, 3, generator=gen(2), requires_grad=True)
    trained = prior.log_prob(z, posterior)
    trained.sum().backward()  # the training path keeps its gradients
    assert z.grad is not None and prior.pseudo_inputs.grad is not None
    with torch.no_grad():
        scored = prior.log_prob(z, posterior)
        m, lv = posterior(prior.pseudo_inputs)
        parts = Independent(Normal(m, (0.5 * lv).exp()), 1)
        ref = MixtureSameFamily(Categorical(logits=torch.zeros(5)), parts).log_prob(z)
    torch.testing.assert_close(scored, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trained.detach(), ref, atol=1e-5, rtol=1e-5)
