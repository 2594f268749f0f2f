def test_import():
    import poh_storage, poh_ttl
    assert poh_storage.__version__
