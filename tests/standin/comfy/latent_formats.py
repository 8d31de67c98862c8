"""Stand-in of comfy/latent_formats.py (SD1.5 and SDXL scale factors only; no latent previews)."""


class LatentFormat:
    scale_factor = 1.0
    latent_channels = 4
    latent_dimensions = 2

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor


class SD15(LatentFormat):
    def __init__(self, scale_factor=0.18215):
        self.scale_factor = scale_factor


class SDXL(LatentFormat):
    scale_factor = 0.13025


class Flux(LatentFormat):
    # real Flux latents have 16 channels and a shift; the stand-in non-UNet model keeps 4 channels
    scale_factor = 0.3611
