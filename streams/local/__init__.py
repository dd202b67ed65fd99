"""The embedded local stack: Apache Kafka from Maven Central jars and redis-server, on loopback."""
