"""The two classifiers: the notes' small LeNet-style net, and a fast batch-normed convnet."""

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_NAMES = ("tutorial", "fast")


class TutorialNet(nn.Module):
    """Exactly the notes' net: conv 3->6 k5, pool, conv 6->16 k5, pool, fc 400->120->84->10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def frozen_scale_norm(channels: int) -> nn.BatchNorm2d:
    """Batch norm with its scale fixed at 1 and only the shift trained (as airbench does).

    The following conv can take up any scale, so a trained scale adds nothing but noise; the
    shifts then take a much larger learning rate (`bias_lr_scale` in the fast recipe).
    """
    norm = nn.BatchNorm2d(channels, momentum=0.4, eps=1e-12)
    norm.weight.requires_grad_(False)
    return norm


def identity_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 3x3 conv whose first `c_in` filters start as the identity (Dirac) map.

    The block then starts close to passing its input through, which trains faster early on.
    """
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(c_in, c_out)])
    return conv


class ConvBlock(nn.Module):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU: halves the size, sets the width.

    Pooling before the first norm does the expensive GELU and BN on a quarter of the pixels.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = identity_conv(c_in, c_out)
        self.norm1 = frozen_scale_norm(c_out)
        self.conv2 = identity_conv(c_out, c_out)
        self.norm2 = frozen_scale_norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """A small airbench-style net: a fixed whitening layer, three conv blocks, a linear head.

    The first layer is a 2x2 conv set from the training images' patch statistics (PCA
    whitening, `init_whitening`) and not trained, which speeds up early learning. The head's
    output is scaled down so the logits start small, which suits the large learning rates.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256),
                 whiten_width: int = 24, logit_scale: float = 0.125):
        super().__init__()
        self.whiten = nn.Conv2d(3, whiten_width, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        blocks, c_in = [], whiten_width
        for width in widths:
            blocks.append(ConvBlock(c_in, width))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer to +/- the whitened principal directions of 2x2 patches.

        `images` are normalized float (N, 3, H, W); a few thousand are plenty.
        """
        k = self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * k * k)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
        filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + eps).sqrt().unsqueeze(1))
        filters = filters.flip(0).float().view(-1, images.shape[1], k, k)  # largest first
        half = self.whiten.out_channels // 2
        self.whiten.weight.copy_(torch.cat([filters[:half], -filters[:half]]))
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))
        x = self.blocks(x)
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * self.logit_scale


def build_model(name: str, num_classes: int, widths: tuple[int, int, int] | None = None,
                ) -> nn.Module:
    if name == "tutorial":
        return TutorialNet(num_classes)
    if name == "fast":
        return FastNet(num_classes, widths=tuple(widths) if widths else (64, 256, 256))
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
