"""engines.get_spark: one session per process, with the settings it was asked for."""


def test_the_session_carries_the_requested_settings(spark):
    from engines import get_spark

    # the session fixture asked for these (tests/conftest.py); a second call returns the same session
    assert get_spark() is spark
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.conf.get("spark.sql.adaptive.enabled") == "false"
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MICROS"  # delta-rs reads it
