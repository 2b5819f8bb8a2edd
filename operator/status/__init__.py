"""The InferenceService's status: conditions (``conditions``), computed from what the cluster reports
(``compute``, pure). Every control loop reports here; one writer puts it on the object.
"""
