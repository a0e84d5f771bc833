"""Entry points: Kafka consumer loops, the command line; where the parts are wired together."""
