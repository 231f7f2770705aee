"""A DDP wrapper that also runs on CPU (gloo) and for models without trainable parameters."""
import torch
from mmengine.model import MMDistributedDataParallel
from torch import nn

from metapoint.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CAPEDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that adapts to where the model lives.

    * CPU model (gloo backend): ``device_ids`` must be None for torch DDP, whatever the runner
      passes (mmengine always passes ``[LOCAL_RANK]``).
    * No parameter requires grad (e.g. :class:`~metapoint.models.SupportCopy`): torch DDP refuses
      such a module; evaluation needs no gradient sync, so the module is held without DDP and
      ``val_step`` / ``test_step`` call it directly. ``train_step`` raises.
    """

    def __init__(self, module: nn.Module, device_ids=None, **kwargs) -> None:
        # channels-last weights and compiled parts before DDP records the parameter layout
        if hasattr(module, 'apply_runtime_options'):
            module.apply_runtime_options()
        params = list(module.parameters())
        if not any(p.requires_grad for p in params):
            nn.Module.__init__(self)
            self.module = module
            self._without_ddp = True
            return
        self._without_ddp = False
        if all(p.device.type == 'cpu' for p in params):
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)

    def train_step(self, data, optim_wrapper):
        if self._without_ddp:
            raise RuntimeError(f'{type(self.module).__name__} has no trainable parameter')
        return super().train_step(data, optim_wrapper)

    def val_step(self, data):
        return self.module.val_step(data)

    def test_step(self, data):
        return self.module.test_step(data)

    def forward(self, *args, **kwargs):
        if self._without_ddp:
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)
