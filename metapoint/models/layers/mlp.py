"""Small MLPs: the point decoders' coordinate head and FMMP's position projection."""
import torch.nn.functional as F
from torch import nn

__all__ = ['TokenDecodeMLP', 'GeluMLP']


class TokenDecodeMLP(nn.Module):
    """Coordinate head: ``num_layers`` x (Linear, GELU), then Linear to ``out_channels``.

    Maps tokens ``[..., in_channels]`` to ``[..., out_channels]``; with ``out_channels=2`` the
    output is an ``(x, y)`` offset in inverse-sigmoid (logit) space, added to
    ``inverse_sigmoid(reference)`` before a sigmoid. Layers live in ``self.mlp`` (an
    ``nn.Sequential``), so the default state_dict keys are ``mlp.{0,2,4,6}.{weight,bias}`` as in
    the official code.
    """

    def __init__(self,
                 in_channels: int = 256,
                 hidden_channels: int = 256,
                 out_channels: int = 2,
                 num_layers: int = 3) -> None:
        super().__init__()
        layers = []
        for i in range(num_layers):
            layers += [nn.Linear(in_channels if i == 0 else hidden_channels, hidden_channels),
                       nn.GELU()]
        layers.append(nn.Linear(hidden_channels if num_layers else in_channels, out_channels))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


class GeluMLP(nn.Module):
    """``num_layers`` Linear layers with GELU between them (none after the last).

    FMMP's reference-position projection ``MLP(C, C, C, 2)`` applied to sine encodings of point
    coordinates. Maps ``[..., in_dims]`` to ``[..., out_dims]``; state_dict keys
    ``layers.{i}.{weight,bias}`` as in the official code.
    """

    def __init__(self, in_dims: int = 256, hidden_dims: int = 256, out_dims: int = 256,
                 num_layers: int = 2) -> None:
        super().__init__()
        dims = [in_dims] + [hidden_dims] * (num_layers - 1) + [out_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x
