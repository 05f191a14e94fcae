"""CFG++ samplers: ComfyUI parity on a closed-form cond/uncond pair, the guided denoiser's unconditional
prediction (also at cfg 1), and renders through the stages (img2img, inpaint, previews, splits).

The references re-implement ComfyUI's comfy/k_diffusion/sampling.py at commit 02159d81
(`sample_euler_ancestral_cfg_pp`, which `sample_euler_cfg_pp` calls with eta 0,
`sample_dpmpp_2m_cfg_pp` and `sample_dpmpp_2s_ancestral_cfg_pp`) for an eps model, with the model's uncond_denoised handed out by the post-CFG
hook as ComfyUI's `set_model_options_post_cfg_function` does, in float64 with the same noise draws.
"""
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from sdbake.stages.samplers import SAMPLERS, model_sigmas, sampler_sigmas
from sdbake.stages.samplers.stepping import Guided
from stage_helpers import count_denoiser_calls, recipe, render_text
from test_sampler_parity import fixed_noise, relative_error
from test_samplers import DATA_STD

CFG = 0.7     # CFG++ scales are below 1


def pair(x, sigma):
    """(cond, uncond) clean estimates: Gaussian data with a per-image mean each, plus a nonlinear term."""
    s = sigma.view(-1, 1, 1, 1)
    shrink = DATA_STD ** 2 / (DATA_STD ** 2 + s ** 2)
    cond_mean = torch.tensor([0.3, -0.4], dtype=x.dtype).view(-1, 1, 1, 1)
    uncond_mean = torch.tensor([-0.1, 0.2], dtype=x.dtype).view(-1, 1, 1, 1)
    wiggle = 0.05 * torch.tanh(x) * s / (1 + s)
    return cond_mean + shrink * (x - cond_mean) + wiggle, uncond_mean + shrink * (x - uncond_mean) - wiggle


def comfy_model(x, sigma):
    """ComfyUI's CFG (uncond + cfg * (cond - uncond)); the second value is what its post-CFG hook hands out."""
    cond, uncond = pair(x, sigma)
    return uncond + (cond - uncond) * CFG, uncond


def ours(x, sigma):
    return Guided(*comfy_model(x, sigma))


def comfy_ancestral_step(sigma_from, sigma_to, eta):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def comfy_euler_ancestral_cfg_pp(x, sigmas, eta, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised, uncond_denoised = comfy_model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            # an eps model: half-log-SNR -log(sigma), so alpha = sigma * exp(-log sigma)
            alpha_s = sigmas[i] * sigmas[i].log().neg().exp()
            alpha_t = sigmas[i + 1] * sigmas[i + 1].log().neg().exp()
            d = (x - alpha_s * uncond_denoised) / sigmas[i]
            sigma_down, sigma_up = comfy_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
            sigma_down = alpha_t * sigma_down
            x = alpha_t * denoised + sigma_down * d
            if eta > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * 1.0 * sigma_up
    return x


def comfy_dpmpp_2m_cfg_pp(x, sigmas):
    s_in = x.new_ones([x.shape[0]])
    t_fn = lambda sigma: sigma.log().neg()
    old_uncond_denoised = None
    for i in range(len(sigmas) - 1):
        denoised, uncond_denoised = comfy_model(x, sigmas[i] * s_in)
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_uncond_denoised is None or sigmas[i + 1] == 0:
            denoised_mix = -torch.exp(-h) * uncond_denoised
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            denoised_mix = -torch.exp(-h) * uncond_denoised - torch.expm1(-h) * (1 / (2 * r)) * (
                denoised - old_uncond_denoised)
        x = denoised + denoised_mix + torch.exp(-h) * x
        old_uncond_denoised = uncond_denoised
    return x


def comfy_dpmpp_2s_ancestral_cfg_pp(x, sigmas, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda t: t.neg().exp()
    t_fn = lambda sigma: sigma.log().neg()
    for i in range(len(sigmas) - 1):
        denoised, uncond_denoised = comfy_model(x, sigmas[i] * s_in)
        guidance_vector = denoised - uncond_denoised
        sigma_down, sigma_up = comfy_ancestral_step(sigmas[i], sigmas[i + 1], 1.0)
        if sigma_down == 0:
            x = x + (x - uncond_denoised) / sigmas[i] * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h * r).expm1() * uncond_denoised
            _, uncond_denoised = comfy_model(x_2, sigma_fn(s) * s_in)    # the hook hands out the new uncond
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * uncond_denoised
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * 1.0 * sigma_up
        x += guidance_vector
    return x


def start(sigmas, seed):
    return torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigmas[0]


@pytest.mark.parametrize("scheduler", ["karras", "normal", "ddim_uniform"])
@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
                                     "dpmpp_2s_ancestral_cfg_pp"])
def test_cfg_pp_samplers_match_comfyui(sampler, scheduler):
    for steps in (1, 2, 5, 20):
        sigmas = sampler_sigmas(sampler, scheduler, model_sigmas(), steps, dtype=torch.float64)
        x = start(sigmas, steps)
        draws = len(sigmas) - 1
        ancestral = sampler in ("euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp")
        if sampler == "dpmpp_2m_cfg_pp":
            reference = comfy_dpmpp_2m_cfg_pp(x, sigmas)
        elif sampler == "dpmpp_2s_ancestral_cfg_pp":
            reference = comfy_dpmpp_2s_ancestral_cfg_pp(x, sigmas, fixed_noise(draws, x.shape))
        else:
            eta = 1.0 if sampler == "euler_ancestral_cfg_pp" else 0.0
            reference = comfy_euler_ancestral_cfg_pp(x, sigmas, eta, fixed_noise(draws, x.shape))
        noise = fixed_noise(draws, x.shape) if ancestral else None
        result, _ = SAMPLERS[sampler](ours, x, sigmas, noise_sampler=noise, carry=None)
        error = relative_error(result, reference)
        print(f"{sampler} {scheduler} {steps} steps: max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)


def test_cfg_pp_differs_from_cfg_by_stepping_along_the_unconditional_noise():
    sigmas = sampler_sigmas("euler", "karras", model_sigmas(), 10, dtype=torch.float64)
    x = start(sigmas, 3)
    euler, _ = SAMPLERS["euler"](lambda x, s: comfy_model(x, s)[0], x, sigmas, noise_sampler=None, carry=None)
    cfg_pp, _ = SAMPLERS["euler_cfg_pp"](ours, x, sigmas, noise_sampler=None, carry=None)
    same, _ = SAMPLERS["euler_cfg_pp"](lambda x, s: Guided(comfy_model(x, s)[0], comfy_model(x, s)[0]), x, sigmas,
                                       noise_sampler=None, carry=None)
    assert relative_error(cfg_pp, euler) > 1e-3
    assert relative_error(same, euler) < 1e-12       # with uncond = guided it is Euler


def test_a_plain_denoiser_is_refused_by_a_cfg_pp_sampler():
    sigmas = sampler_sigmas("euler_cfg_pp", "karras", model_sigmas(), 4)
    with pytest.raises(TypeError, match="Guided"):
        SAMPLERS["euler_cfg_pp"](lambda x, s: x * 0, torch.zeros((2, 4, 8, 8)), sigmas, noise_sampler=None)


def small_denoiser(cfg, with_uncond):
    from sdbake.stages.denoiser import Denoiser
    from test_compile import guided_denoiser, small_unet
    plain = guided_denoiser(small_unet(), cfg)
    return Denoiser(plain.unet, model_sigmas(), "epsilon", cfg, plain.inputs_for_call, with_uncond=with_uncond)


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_the_guided_denoiser_hands_out_the_uncond_of_the_same_call_also_at_cfg_1(cfg):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 3.0
    sigma = torch.tensor([3.0])
    rows = []
    with torch.inference_mode():
        both = small_denoiser(cfg, True)
        unet = both.unet
        original = unet.forward
        unet.forward = lambda sample, *args, **kwargs: (rows.append(sample.shape[0]), original(sample, *args,
                                                                                               **kwargs))[1]
        out = both(x, sigma)
        plain = small_denoiser(cfg, False)(x, sigma)
        only_uncond = small_denoiser(0.0, False)(x, sigma)
    assert isinstance(out, Guided) and rows[0] == 2                   # uncond and cond rows, even at cfg 1
    guided, uncond = out
    if cfg == 1.0:      # the usual denoiser runs the cond row alone: a 1-row batch rounds otherwise
        assert torch.allclose(guided, plain, rtol=0, atol=1e-4) and not torch.equal(guided, plain)
    else:
        assert torch.equal(guided, plain)                             # the guided part is the usual one
    assert torch.equal(uncond, only_uncond)                           # cfg 0: the unconditional prediction
    assert not torch.equal(uncond, guided)


def img2img(model, sampler: str, cfg: float, tmp_path) -> np.ndarray:
    Image.new("RGB", (64, 64), (200, 120, 40)).save(tmp_path / "init.png")
    text = recipe(model, '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "i.png"\n', steps=4,
                  sampler=sampler, cfg=cfg).replace('negative = "blurry"\n',
                                                    'negative = "blurry"\nimage = "init.png"\ndenoise = 0.7\n')
    folder = tmp_path / sampler / str(cfg)
    folder.mkdir(parents=True)
    (folder / "init.png").write_bytes((tmp_path / "init.png").read_bytes())
    render_text(folder, text.replace('scheduler = "karras"', 'scheduler = "ddim_uniform"'))
    return np.asarray(Image.open(folder / "out" / "i.png"))


def test_ddim_cfg_pp_is_euler_cfg_pp_at_cfg_over_12_5_through_the_stages(tmp_path, tiny_model_dir):
    """img2img starts both the same way (A1111's timestep samplers differ from k-diffusion's only in the
    txt2img start), so A1111's DDIM CFG++ at CFG 12.5 renders ComfyUI's euler_cfg_pp at cfg 1 bit for bit;
    CFG++ at cfg 1 is not Euler: it steps along the unconditional prediction, computed at cfg 1 too."""
    ddim_cfg_pp = img2img(tiny_model_dir, "DDIM CFG++", 12.5, tmp_path)
    assert np.array_equal(ddim_cfg_pp, img2img(tiny_model_dir, "euler_cfg_pp", 1.0, tmp_path))
    assert not np.array_equal(ddim_cfg_pp, img2img(tiny_model_dir, "euler", 1.0, tmp_path))


def test_a_cli_render_with_the_ddim_cfg_pp_label_writes_it_to_the_infotext(tmp_path, tiny_model_dir, monkeypatch):
    from test_a1111_timestep_samplers import run_cli
    calls = count_denoiser_calls(monkeypatch)
    code, fields = run_cli(tmp_path, tiny_model_dir, "DDIM CFG++", "Automatic", "ddim_cfg_pp")
    assert code == 0
    assert (fields["Sampler"], fields["Schedule type"], fields["CFG scale"]) == ("DDIM CFG++", "DDIM", "5.0")
    sigmas = model_sigmas()
    assert calls == pytest.approx([sigmas[t].item() for t in (751, 501, 251, 1)], rel=1e-5)


@pytest.mark.parametrize("sampler", ["euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"])
def test_cfg_pp_inpaints_with_previews_and_splits_exactly(tmp_path, tiny_model_dir, sampler):
    from recipe_helpers import txt2img
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "mask.png")
    stages = ('[[stages]]\ntype = "sample"\npreview_every = 2\n\n[[stages]]\ntype = "save"\npath = "a.png"\n\n'
              '[[stages]]\ntype = "inpaint"\nmask = "mask.png"\nblur = 2\ndenoise = 0.6\n\n'
              '[[stages]]\ntype = "save"\npath = "b.png"\n')
    render_text(tmp_path, recipe(tiny_model_dir, stages, steps=4, sampler=sampler, cfg=0.8))
    before = np.asarray(Image.open(tmp_path / "out" / "a.png"), dtype=np.int16)
    after = np.asarray(Image.open(tmp_path / "out" / "b.png"), dtype=np.int16)
    outside = np.asarray(mask.filter(ImageFilter.GaussianBlur(2))) == 0
    assert np.array_equal(before[outside], after[outside]) and np.abs(before[~outside] - after[~outside]).mean() > 1
    assert f"Sampler: {SAMPLER_LABELS[sampler]}," in Image.open(tmp_path / "out" / "a.png").info["parameters"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "split").mkdir()
    whole = render_text(tmp_path / "whole", txt2img(tiny_model_dir, sampler=sampler, steps=6, cfg=0.8))
    split = render_text(tmp_path / "split", txt2img(tiny_model_dir, sampler=sampler, steps=6, cfg=0.8, split=3))
    assert np.array_equal(np.asarray(Image.open(whole.outputs[0])), np.asarray(Image.open(split.outputs[0])))


SAMPLER_LABELS = {"euler_ancestral_cfg_pp": "Euler a CFG++", "dpmpp_2m_cfg_pp": "DPM++ 2M CFG++",
                  "dpmpp_2s_ancestral_cfg_pp": "DPM++ 2S a CFG++"}

