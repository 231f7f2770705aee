from .inference import inference_episode, init_estimator

__all__ = ['inference_episode', 'init_estimator']
