"""Training sampler that draws class-balanced episodes per epoch, sharded over ranks."""
from typing import Iterator, Optional

from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from metapoint.registry import DATA_SAMPLERS
from .episodes import Episode, draw_train_episodes


@DATA_SAMPLERS.register_module()
class EpisodeSampler(Sampler):
    """Yields :class:`Episode` tuples (the dataset's training indices) for the current epoch.

    The epoch's episode list depends only on (seed, epoch) (see
    :func:`~metapoint.datasets.episodes.draw_train_episodes`), so it is identical on every rank and
    after a resume; rank r takes every world_size-th episode, the list padded by wrapping so all
    ranks run the same number of iterations. ``set_epoch`` is called by mmengine's
    ``DistSamplerSeedHook``. Sampling happens in the main process, so persistent dataloader workers
    see the new epoch too.

    Args:
        dataset: an :class:`MP100Dataset` in training mode.
        seed: run seed (mmengine passes the runner's); None draws a seed shared by all ranks.
        episodes_per_category: episodes per category per epoch; None = the largest instance count
            over categories (official). Set it to shorten epochs on small machines.
    """

    def __init__(self, dataset, seed: Optional[int] = None,
                 episodes_per_category: Optional[int] = None) -> None:
        if getattr(dataset, 'test_mode', False):
            raise ValueError('EpisodeSampler is for training datasets; evaluation datasets hold '
                             'fixed episodes, use DefaultSampler(shuffle=False)')
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.episodes_per_category = episodes_per_category
        self.rank, self.world_size = get_dist_info()
        self.epoch = 0
        n_cat = len(dataset.cat_to_indices)
        per_cat = episodes_per_category or max(len(v) for v in dataset.cat_to_indices.values())
        self.total = n_cat * per_cat
        self.num_samples = -(-self.total // self.world_size)

    def episodes(self, epoch: int) -> list:
        """All ranks' episodes of ``epoch`` (before sharding)."""
        return draw_train_episodes(self.dataset.cat_to_indices, self.dataset.num_shots,
                                   self.seed, epoch, self.episodes_per_category)

    def __iter__(self) -> Iterator[Episode]:
        eps = self.episodes(self.epoch)
        padded = (eps * (-(-self.num_samples * self.world_size // len(eps))))
        padded = padded[:self.num_samples * self.world_size]
        return iter(padded[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
