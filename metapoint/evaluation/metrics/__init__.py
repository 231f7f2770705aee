from .cape_metric import CAPEMetric, format_pck_table

__all__ = ['CAPEMetric', 'format_pck_table']
