"""The one VAE decode path (``graft_core.data.decoder``) against diffusers' own ``AutoencoderKL.decode``."""
from __future__ import annotations

import numpy as np
import torch

from benchmark.fakes.prerequisites import sd_vae
from graft_core.data.decoder import decode_batches, vae_decoder
from graft_core.evaluation.sample_at_scale import decode_latents
from graft_core.data.decoder import to_uint8


def test_vae_decoder_is_diffusers_decode_of_the_unscaled_latents():
    vae = sd_vae(8, layers_per_block=1, norm_num_groups=4, sample_size=32, scaling_factor=0.13025)  # the SD-XL VAE's factor: read from the config unless a scale is given
    z = torch.randn(5, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = vae.decode(z / 0.13025).sample.clamp(-1, 1)
        other = vae.decode(z / 0.18215).sample.clamp(-1, 1)
    got = decode_batches(vae_decoder(vae), z, batch_size=2)  # batches of 2, 2, 1: the same images
    assert got.dtype == torch.float32 and got.shape == (5, 3, 16, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(decode_batches(vae_decoder(vae, scale=0.18215), z), other, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want, other)
    # sharded sampling decodes SD-VAE latents (× 0.18215) the same way, to the ADM uint8 layout
    assert np.array_equal(decode_latents(vae, z, batch_size=3), to_uint8(other))


def test_pixel_space_samples_need_no_decoder():
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    assert torch.equal(decode_batches(None, x), x)
    images = decode_latents(None, x)
    assert images.shape == (3, 4, 4, 3) and np.array_equal(images[..., 0], to_uint8(x)[..., 0])
