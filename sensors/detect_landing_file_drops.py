"""Wait until the landing zone holds file drops not loaded yet (new, or written again).

Cheap when nothing is new: one listing of the zone and one query of ops.file_manifest, no
file is read. Pipeline variable wait_for_files=false (the daily schedule, the command line)
goes on at once, to load whatever is there.
"""
from mage_project.pipelines import file_drops

if 'sensor' not in globals():
    from mage_ai.data_preparation.decorators import sensor


@sensor
def detect_landing_file_drops(*args, **kwargs) -> bool:
    return file_drops.sensor_ready(kwargs.get('wait_for_files', True))
