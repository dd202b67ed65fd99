"""The Kafka -> Celery bridge: routes from the catalog, the consumer loop, and the task-side helpers.

Import from the modules (`streams.bridge.bridge`, `streams.bridge.tasks`); this package imports nothing.
"""
