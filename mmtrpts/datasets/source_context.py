"""Pipeline errors that name the image and where it was listed."""
import logging
from typing import Optional

from mmengine.logging import print_log

from .annotation_io import exception_with_context


class SourceContextMixin:
    """``prepare_data`` whose errors name the image and its listing.

    A dataset mixing this in (before ``BaseDataset``) implements
    :meth:`sample_source`, e.g. ``'<split file>, line 12'``.
    """

    def sample_source(self, data_info: dict) -> str:
        """Where the sample ``data_info`` was listed."""
        raise NotImplementedError

    def prepare_data(self, idx: int) -> Optional[dict]:
        """Run the pipeline; errors name the image and its source."""
        data_info = self.get_data_info(idx)
        img_path = data_info.get('img_path')
        source = self.sample_source(data_info)
        try:
            results = self.pipeline(data_info)
        except Exception as exc:
            raise exception_with_context(
                exc, f'Failed to load or transform image {img_path} '
                f'(listed in {source})') from exc
        if results is None:
            print_log(
                f'The pipeline returned None for image {img_path} (listed '
                f'in {source}); another sample will be used in training.',
                logger='current',
                level=logging.WARNING)
        return results
