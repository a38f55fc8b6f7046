"""The DittoServer custom resource: its model (v1alpha1), the schema toolkit and the CRD."""
