"""The opt-out model: the person aggregate, its events and rules, and the service that records changes."""
