"""Speed figures of the project, each next to a baseline measured in the same run."""
