"""``opsctl scale simulate``: replay a load trace through the autoscaler's own ``decide()``.

Pure (tested by tables): :mod:`.model` (the service and the tick-by-tick replay), :mod:`.summary`,
:mod:`.compare` (HPA defaults), :mod:`.tune`, :mod:`.forecast`, :mod:`.shapes`, :mod:`.chart`.
Adapters: :mod:`.trace` (CSV files, errors with file:line), :mod:`.history` (Prometheus ranges),
:mod:`.capacity` (the calibration file). :mod:`.service` joins them for the command.
"""
