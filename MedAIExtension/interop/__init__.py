"""Reports for hospital systems: the MedAI nodule report as plain text, an HL7 v2.5.1 ORU^R01 sent to a RIS over
MLLP, and a FHIR R4 DiagnosticReport.

>>> from MedAIExtension.interop.hl7_oru import build_oru          # doctest: +SKIP
>>> from MedAIExtension.interop.mllp import send_mllp              # doctest: +SKIP
>>> send_mllp(build_oru(result), "ris.example.org", 2575, 10.0)   # doctest: +SKIP

The modules are imported one by one (this package imports none of them), so reading a report needs no HL7 library.
"""
