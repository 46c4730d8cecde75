"""What a platform team applies: Strimzi resources and the Helm chart's generated files."""
