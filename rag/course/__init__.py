"""Course rules: release dates, exam windows and open assignments (read from course_materials/)."""
