"""Cohorts: ``medai batch`` segments many studies (on Ray, embedded or on a cluster) and reports on the cohort.

* :mod:`.records` — what one study of a batch produced (:class:`StudyRecord`), shared by the runner and the report.
"""
