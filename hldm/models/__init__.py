"""H-LDM networks: MS-VAE, clinical conditioner, denoising U-Net and their parts.

Each module holds a config dataclass and an nn.Module; import from the module
(`from hldm.models.unet import ConditionalUNet1D, UNetConfig`), so importing this
package stays cheap and the text encoder is loaded only when asked for.
"""
