"""S3: recurring task types, found without labels, named, stable between runs, assignable online."""
