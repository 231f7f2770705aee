from .meta_point_assigner import MetaPointAssigner, gather_by_assignment

__all__ = ['MetaPointAssigner', 'gather_by_assignment']
