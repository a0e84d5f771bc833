"""The edges: Salesforce, Kafka, persistence settings, local services, the Salesforce sandbox."""
