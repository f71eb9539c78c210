from setuptools import find_packages, setup

setup(
    name="cdr-billing",
    version="0.1.0",
    description="Batch telecom billing: Airflow DAGs scheduling PySpark jobs from CDRs to invoice-ready Delta tables",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["jobs", "jobs.*", "schemas", "schemas.*"]),
    include_package_data=True,
    package_data={"jobs": ["templates/*.j2"]},
    install_requires=[
        "pyspark==4.1.3",
        "pyspark-client==4.1.3",
        "delta-spark==4.4.1",
        "great-expectations[spark]==1.24.1",
        "apache-airflow==3.3.2",
        "apache-airflow-providers-apache-spark",
        "pandas<3",
        "pydantic>=2",
        "pyyaml",
        "holidays",
        "iso4217",
        "jinja2",
        "deltalake",
        "tabulate",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "chispa", "playwright"],
    },
    entry_points={"console_scripts": ["cdr-billing=jobs.cli:main"]},
)
