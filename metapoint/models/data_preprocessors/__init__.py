from .cape_data_preprocessor import CAPEDataPreprocessor

__all__ = ['CAPEDataPreprocessor']
